"""Side-by-side training curves: optimizers, then initialisations, same data and seed.

    python compare.py            # writes figures/optimizers.png and figures/inits.png

Each curve is the training loss per epoch on the spiral; only the compared choice changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.cli import arg, cli_main

# learning rates in each rule's usual range; one shared value would favour one of them
OPTIMIZER_LR = {"sgd": 0.1, "momentum": 0.02, "nesterov": 0.02, "rmsprop": 0.002, "adam": 0.005}


@dataclass
class CompareConfig:
    out: str = arg("figures", "folder for the PNGs")
    epochs: int = arg(40, "epochs per curve", min=1)
    seed: int = arg(0, "seed of data, weights and shuffling (the same for every curve)", min=0)


def train_curve(dataset, hidden, activation, init, optimizer, lr, epochs, seed) -> list[float]:
    from model import ModelConfig, SoftmaxCrossEntropy, build_mlp
    from optim import make_optimizer
    from train import DataLoader, fit

    X, y = dataset
    rng = np.random.default_rng(seed)
    model = build_mlp(ModelConfig(2, hidden, 3, activation, init), rng)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    history = fit(model, SoftmaxCrossEntropy(), opt, DataLoader(X, y, 32, rng), epochs)
    return [r["train_loss"] for r in history]


def main(cfg: CompareConfig) -> None:
    from shared.data import make_toy
    from shared.plots import plot_curves

    out = Path(cfg.out)
    data = make_toy("spiral", n=1200, seed=cfg.seed)
    epochs = list(range(1, cfg.epochs + 1))

    curves = {}
    for name, lr in OPTIMIZER_LR.items():
        losses = train_curve(data, (64, 64), "relu", "he", name, lr, cfg.epochs, cfg.seed)
        curves[f"{name} (lr {lr})"] = (epochs, losses)
        print(f"optimizer {name:9s} lr {lr:<6g} final train loss {losses[-1]:.4f}")
    plot_curves(out / "optimizers.png", curves, "epoch", "train loss", "optimizers", logy=True)

    curves = {}
    for init in ("zeros", "small", "xavier", "he"):  # a deeper net makes the differences show
        losses = train_curve(data, (64,) * 5, "relu", init, "momentum", 0.02, cfg.epochs, cfg.seed)
        curves[init] = (epochs, losses)
        print(f"init {init:6s} final train loss {losses[-1]:.4f}")
    title = "initialisations (5 hidden ReLU layers, momentum)"
    plot_curves(out / "inits.png", curves, "epoch", "train loss", title, logy=True)
    print(f"wrote {out / 'optimizers.png'} and {out / 'inits.png'}")


if __name__ == "__main__":
    cli_main(main, CompareConfig)
