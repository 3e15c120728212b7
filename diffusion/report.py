"""The figures of a training run: the forward and reverse processes, samples, the loss curve.

train.py calls `write_figures` after training (with the EMA weights loaded) and
`write_class_samples` with the evaluation's samples; nothing here changes the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffusion import GaussianDiffusion, to_unit
from shared.logging import read_log
from shared.plots import (
    images_to_grid,
    plot_curves,
    save_gif,
    save_image,
    save_image_grid,
    save_labelled_grid,
)


def write_figures(
    run_path: Path, cfg, diffusion: GaussianDiffusion, model, x_train, n_classes: int, device
) -> None:
    """forward_process.png, reverse_process.gif and .png, samples.png, loss.png."""
    generator = torch.Generator(device).manual_seed(cfg.seed + 1)
    # 1. Forward process q(x_t | x_0) of one training image at evenly spaced t.
    x0 = x_train[:1].to(device)
    ts = np.linspace(0, cfg.timesteps - 1, 8).round().astype(int)
    noise = torch.randn(x0.shape, generator=generator, device=device)
    forward = [diffusion.q_sample(x0, torch.tensor([t], device=device), noise) for t in ts]
    save_image_grid(
        run_path / "forward_process.png",
        to_unit(torch.cat([x0, *forward])),
        nrow=9,
        titles=["x_0", *[f"t={t}" for t in ts]],
    )
    # 2. The reverse process of a fixed batch (one per class), as a GIF and as a strip.
    n_steps = cfg.timesteps if cfg.sampler == "ddpm" else cfg.sample_steps
    y = torch.arange(8, device=device) % n_classes if n_classes else None
    shape = (8, cfg.channels, cfg.image_size, cfg.image_size)
    _, frames = diffusion.sample(
        model, shape, cfg.sampler, cfg.sample_steps, cfg.eta, y=y, guidance=cfg.guidance,
        variance=cfg.variance, generator=generator, device=device,
        keep_every=max(1, n_steps // 40),
    )  # fmt: skip
    grids = [images_to_grid(to_unit(f), nrow=8) for f in frames]  # each (H', W')
    save_gif(run_path / "reverse_process.gif", grids + grids[-1:] * 10, 80, scale=4)
    rows = np.linspace(0, len(grids) - 1, min(9, len(grids))).round().astype(int)
    save_image(run_path / "reverse_process.png", np.concatenate([grids[i] for i in rows]), scale=4)
    # 3. Unconditional samples (the model with no label).
    shape = (64, cfg.channels, cfg.image_size, cfg.image_size)
    samples, _ = diffusion.sample(
        model, shape, cfg.sampler, cfg.sample_steps, cfg.eta, variance=cfg.variance,
        generator=generator, device=device,
    )  # fmt: skip
    save_image_grid(run_path / "samples.png", to_unit(samples), nrow=8)
    write_loss_curve(run_path)


def write_loss_curve(run_path: Path) -> None:
    """loss.png from log.jsonl: the mean training loss of every logged interval."""
    records = [r for r in read_log(run_path / "log.jsonl") if "loss" in r]
    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    plot_curves(run_path / "loss.png", {"train": (steps, losses)}, "step", "loss", logy=True)


def write_class_samples(
    run_path: Path, samples: np.ndarray, labels: np.ndarray, class_names
) -> None:
    """class_samples.png: one row per class, named, with up to ten samples each."""
    per_class = min(10, min(int((labels == k).sum()) for k in range(len(class_names))))
    rows = [samples[labels == k][:per_class] for k in range(len(class_names))]
    save_labelled_grid(
        run_path / "class_samples.png", np.concatenate(rows), list(class_names), [""] * per_class
    )
