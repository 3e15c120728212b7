"""RNN vs LSTM vs GRU on the same data, with the same seed and the same time budget.

    python compare.py                      # the three cells on the stdlib corpus, 60 s each
                                           # -> runs/compare/<time>/
    python compare.py --dataset shakespeare --data-dir DATA --time-budget 120

Each cell is trained by train.py's own `main` into <run>/<cell>/. Then two figures:
- val_loss.png: validation loss against training time, one curve per cell;
- gradient_through_time.png: ||dL_T/dh_t|| for a loss at the last step T only, against T - t,
  at initialisation and after training. The vanilla RNN's gradient shrinks geometrically
  the further back it goes; the gated cells keep it alive through c (LSTM) or z (GRU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from model import CELLS, CharRNN, load_model
from train import TrainConfig, load_corpus
from train import main as train_main

from shared.cli import RunConfig, arg, cli_main
from shared.errors import UserError
from shared.logging import read_log, start_run
from shared.plots import save_figure

HERE = Path(__file__).parent


@dataclass
class CompareConfig(RunConfig):
    dataset: str = arg("stdlib", "text corpus", choices=("stdlib", "shakespeare"))
    text_file: str = arg("", "compare on this UTF-8 text file instead of --dataset")
    cells: tuple[str, ...] = arg(CELLS, "cells to compare", choices=CELLS)
    hidden: int = arg(128, "hidden state width", min=1)
    time_budget: float = arg(60.0, "seconds of training and validation per cell (0: none)", min=0)
    max_steps: int = arg(100_000, "at most this many steps per cell", min=1)
    eval_interval: int = arg(50, "steps between validation losses", min=1)
    horizon: int = arg(100, "time steps the gradient is followed back", min=2)
    threads: int = arg(1, "BLAS threads", min=1)


def gradient_through_time(model: CharRNN, ids: np.ndarray, horizon: int, batch: int = 16):
    """Mean over the batch of ||dL/dh_t|| (first layer), L the loss of the last step alone."""
    starts = np.linspace(0, len(ids) - horizon - 1, batch).astype(int)
    x = np.stack([ids[s : s + horizon] for s in starts])  # (B, T)
    targets = np.full_like(x, -1)
    targets[:, -1] = [ids[s + horizon] for s in starts]  # only the last step has a target
    model.forward(x, targets)
    model.backward()
    dh = model.layers[0].dh  # (T, B, H)
    return np.linalg.norm(dh, axis=2).mean(axis=1)[::-1]  # index k = k steps before the loss


def main(cfg: CompareConfig) -> dict:
    if cfg.resume:
        raise UserError("compare.py cannot --resume: run it again (or resume a cell with train.py)")
    if not cfg.out:  # runs/compare/<time>: runs/latest stays on the last train.py run
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg = dataclasses.replace(cfg, out=str(HERE / "runs" / "compare" / stamp))
    run = start_run("rnn vs lstm vs gru", cfg, HERE)
    shared_flags = dict(
        seed=cfg.seed, data_dir=cfg.data_dir, dataset=cfg.dataset, text_file=cfg.text_file,
        hidden=cfg.hidden, time_budget=cfg.time_budget, max_steps=cfg.max_steps,
        eval_interval=cfg.eval_interval, dry_run=cfg.dry_run, threads=cfg.threads,
    )  # fmt: skip
    corpus = load_corpus(TrainConfig(**shared_flags))
    results, curves, gradients = {}, {}, {}
    for cell in cfg.cells:
        metrics = train_main(TrainConfig(out=str(run.path / cell), cell=cell, **shared_flags))
        log = read_log(run.path / cell)
        curves[cell] = {key: [r[key] for r in log] for key in ("step", "time_s", "val_loss")}
        trained, meta = load_model(run.path / cell / "model.npz")
        fresh = CharRNN(trained.config, np.random.default_rng(cfg.seed))
        horizon = min(cfg.horizon, len(corpus.val) - 2)
        gradients[cell] = {
            "at initialisation": gradient_through_time(fresh, corpus.val, horizon),
            "after training": gradient_through_time(trained, corpus.val, horizon),
        }
        results[cell] = {
            "val_loss": metrics["value"],
            "val_bits_per_char": metrics["val_bits_per_char"],
            "steps": metrics["steps"],
            "parameters": metrics["parameters"],
            "sample": (run.path / cell / "samples.txt").read_text()[:200],
        }

    budget = f"{cfg.time_budget:.0f} s" if cfg.time_budget else f"{cfg.max_steps} steps"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in [(axes[0], "step", "training step"), (axes[1], "time_s", "seconds")]:
        for cell, curve in curves.items():
            steps = results[cell]["steps"]
            ax.plot(curve[key], curve["val_loss"], label=f"{cell.upper()} ({steps} steps)")
        ax.axhline(metrics["bigram_val_loss"], color="gray", linestyle=":", label="bigram")
        ax.set(xlabel=f"{label} (training and validation)" if key == "time_s" else label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (nats/char)")
    axes[0].legend()
    fig.suptitle(f"same data and seed, budget {budget} per cell, hidden {cfg.hidden}")
    save_figure(fig, run.path / "val_loss.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, when in zip(axes, ["at initialisation", "after training"]):
        for cell, norms in gradients.items():
            ax.plot(np.arange(len(norms[when])), norms[when], label=cell.upper())
        ax.set(xlabel="steps back from the loss (T - t)", title=when, yscale="log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("||dL_T / dh_t||")
    axes[0].legend()
    save_figure(fig, run.path / "gradient_through_time.png")

    for cell, r in results.items():
        print(
            f"{cell:5s} {r['steps']:6d} steps  val {r['val_loss']:.3f} nats/char  "
            f"{r['parameters']} parameters"
        )
    best = min(results, key=lambda cell: results[cell]["val_loss"])
    return run.finish(
        metric=f"best val_loss ({best})",
        value=results[best]["val_loss"],
        higher_is_better=False,
        results=results,
        bigram_val_loss=metrics["bigram_val_loss"],
        gradient_norm_at_horizon={
            cell: float(g["after training"][-1]) for cell, g in gradients.items()
        },
    )


if __name__ == "__main__":
    cli_main(main, CompareConfig)
