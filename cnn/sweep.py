"""A small hyper-parameter sweep: learning rate x batch size x optimizer, LeNet-5 on the digits.

    python sweep.py                 # 5 learning rates x 3 batch sizes x 2 optimizers = 30 runs
    python sweep.py --lrs 0.001 0.01 --batch-sizes 32 --optimizers adam --epochs 3

Every combination is one ordinary `train.py` run (same seed, same data, same epochs), kept in
its own folder under --out; the sweep then writes the test accuracies as a table (sweep.md,
sweep.json) and as one heat map per optimizer (sweep.png).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import train

from shared.cli import arg, cli_main
from shared.logging import progress
from shared.plots import save_figure

PROJECT_DIR = Path(__file__).parent


@dataclass
class SweepConfig:
    out: str = arg("", "folder for the runs and the table (default: runs/sweep)")
    model: str = arg("lenet5", "which network", choices=train.ALL_MODELS)
    dataset: str = arg("digits", "training data", choices=("digits", "mnist", "fashion-mnist"))
    data_dir: str = arg("", "where datasets live (for mnist and fashion-mnist)")
    lrs: tuple[float, ...] = arg(
        (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "peak learning rates", min=0, min_inclusive=False
    )
    batch_sizes: tuple[int, ...] = arg((16, 64, 256), "batch sizes", min=1)
    optimizers: tuple[str, ...] = arg(("adam", "sgd"), "update rules", choices=("adam", "sgd"))
    epochs: int = arg(10, "epochs of every run", min=1)
    max_train: int = arg(0, "use only the first N training images (0: all)", min=0)
    seed: int = arg(0, "the seed of every run")
    threads: int = arg(1, "BLAS/torch threads", min=1)


def markdown_table(results: list[dict], cfg: SweepConfig) -> str:
    """Rows: optimizer and learning rate; columns: batch size; cells: test accuracy."""
    accuracy = {(r["optimizer"], r["lr"], r["batch_size"]): r["test_accuracy"] for r in results}
    header = "| optimizer | lr | " + " | ".join(f"batch {b}" for b in cfg.batch_sizes) + " |"
    lines = [header, "| --- | --- |" + " --- |" * len(cfg.batch_sizes)]
    for optimizer, lr in itertools.product(cfg.optimizers, cfg.lrs):
        cells = " | ".join(f"{accuracy[optimizer, lr, b]:.4f}" for b in cfg.batch_sizes)
        lines.append(f"| {optimizer} | {lr:g} | {cells} |")
    return "\n".join(lines) + "\n"


def accuracy_grid(results: list[dict], cfg: SweepConfig, optimizer: str) -> np.ndarray:
    """(learning rates, batch sizes) test accuracies of one optimizer."""
    grid = np.zeros((len(cfg.lrs), len(cfg.batch_sizes)))
    for r in results:
        if r["optimizer"] == optimizer:
            grid[cfg.lrs.index(r["lr"]), cfg.batch_sizes.index(r["batch_size"])] = r[
                "test_accuracy"
            ]
    return grid


def plot_heat_maps(path: Path, results: list[dict], cfg: SweepConfig) -> None:
    fig, axes = plt.subplots(
        1,
        len(cfg.optimizers),
        figsize=(1.2 * len(cfg.batch_sizes) * len(cfg.optimizers) + 2, 4),
        squeeze=False,
    )
    for ax, optimizer in zip(axes[0], cfg.optimizers):
        grid = accuracy_grid(results, cfg, optimizer)
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, origin="lower", aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            colour = "black" if value > 0.6 else "white"
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=9, color=colour)
        ax.set_xticks(range(len(cfg.batch_sizes)), [str(b) for b in cfg.batch_sizes])
        ax.set_yticks(range(len(cfg.lrs)), [f"{lr:g}" for lr in cfg.lrs])
        ax.set_xlabel("batch size")
        if ax is axes[0, 0]:
            ax.set_ylabel("peak learning rate")
        ax.set_title(f"{optimizer}: test accuracy")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    save_figure(fig, path)


def main(cfg: SweepConfig) -> list[dict]:
    out = Path(cfg.out) if cfg.out else PROJECT_DIR / "runs" / "sweep"
    grid = list(itertools.product(cfg.optimizers, cfg.lrs, cfg.batch_sizes))
    results = []
    for optimizer, lr, batch_size in progress(grid, desc="sweep"):
        run_cfg = train.TrainConfig(
            model=cfg.model,
            dataset=cfg.dataset,
            data_dir=cfg.data_dir,
            optimizer=optimizer,
            lr=lr,
            batch_size=batch_size,
            epochs=cfg.epochs,
            max_train=cfg.max_train,
            seed=cfg.seed,
            threads=cfg.threads,
            figures=False,
            out=str(out / f"{optimizer}-lr{lr:g}-batch{batch_size}"),
        )
        run_cfg.check()
        with contextlib.redirect_stdout(io.StringIO()):  # one line per run, not one per epoch
            metrics = train.main(run_cfg)
        results.append(
            dict(
                optimizer=optimizer,
                lr=lr,
                batch_size=batch_size,
                test_accuracy=metrics["value"],
                train_accuracy=metrics["train_accuracy"],
                wall_time_s=metrics["wall_time_s"],
            )
        )
        print(
            f"{optimizer:4s} lr {lr:<7g} batch {batch_size:<4d} "
            f"test accuracy {metrics['value']:.4f}  ({metrics['wall_time_s']:.1f} s)"
        )
    table = markdown_table(results, cfg)
    (out / "sweep.md").write_text(table)
    (out / "sweep.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_heat_maps(out / "sweep.png", results, cfg)
    best = max(results, key=lambda r: r["test_accuracy"])
    print(table, end="")
    print(
        f"best: {best['optimizer']} lr {best['lr']:g} batch {best['batch_size']}: "
        f"{best['test_accuracy']:.4f} -> {out}"
    )
    return results


if __name__ == "__main__":
    cli_main(main, SweepConfig)
