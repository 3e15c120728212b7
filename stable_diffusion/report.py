"""The figures of a run: reconstructions, both stages' loss curves, and the labelled sample grid.

Kept out of train.py so that the training loop reads in one screen; everything here is drawn
from the run folder's log.jsonl and the evaluation's images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from data import CORNERS, DIGIT_WORDS

from shared.logging import read_log
from shared.plots import plot_curves, save_image_grid, save_labelled_grid


def write_figures(run_path: Path, model, test, samples: np.ndarray, seed: int) -> None:
    """reconstructions.png, autoencoder_loss.png, diffusion_loss.png and samples.png.

    `samples` are the evaluation's images in prompt order (digit 0-9, then corner 0-3, repeated
    per sample): the first 40 fill a grid with a row per digit and a column per corner.
    """
    test_images, _, _, _ = test.sample(8, np.random.default_rng(seed))
    device = next(model.parameters()).device
    with torch.no_grad():
        reconstructed = model.to_image(model.to_latent(torch.from_numpy(test_images).to(device)))
    save_image_grid(
        run_path / "reconstructions.png",
        np.concatenate([test_images, reconstructed.cpu().numpy()]),
        nrow=8,
    )
    records = read_log(run_path)
    for stage, key, name, ylabel in (
        ("autoencoder", "reconstruction", "autoencoder_loss.png", "BCE per image"),
        ("diffusion", "loss", "diffusion_loss.png", "noise MSE"),
    ):
        kept = [r for r in records if r.get("stage") == stage]
        steps = [r["step"] for r in kept]
        plot_curves(
            run_path / name, {stage: (steps, [r[key] for r in kept])}, ylabel=ylabel, logy=True
        )
    save_labelled_grid(
        run_path / "samples.png",
        samples[:40],
        row_labels=DIGIT_WORDS,
        col_labels=CORNERS,
    )
