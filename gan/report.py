"""The figures of both GANs: the 2-D GAN's decision surface and training GIF, the image GANs'
sample grids (also one row per class), training GIF and loss curves.

Inputs are NumPy arrays; the loss curves come from the run's log.jsonl, so neither training
script keeps a history of its own.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from shared.logging import read_log
from shared.plots import (
    figure_to_array,
    images_to_grid,
    plot_curves,
    save_figure,
    save_gif,
    save_image_grid,
)

MAX_GIF_FRAMES = 25  # evenly spaced, ending on the last epoch, so the GIF stays small


def plot_losses(run_path: Path, title: str) -> None:
    """losses.png: the discriminator's and the generator's loss at every logged step."""
    records = [r for r in read_log(run_path / "log.jsonl") if "loss_D" in r]
    steps = [r["step"] for r in records]
    plot_curves(
        run_path / "losses.png",
        {
            "discriminator": (steps, [r["loss_D"] for r in records]),
            "generator": (steps, [r["loss_G"] for r in records]),
        },
        xlabel="step",
        title=title,
    )


# ----------------------------------------------------------------------------- 2-D


def draw_2d(real, fake, surface, axis, title):
    """Real (black) and generated (orange) points over D's output D(x) on the grid."""
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    n = len(axis)
    levels = np.linspace(0, 1, 11)
    contour = ax.contourf(axis, axis, surface.reshape(n, n), levels=levels, cmap="RdBu", alpha=0.6)
    fig.colorbar(contour, ax=ax, fraction=0.046, pad=0.04, label="D(x)")
    ax.scatter(real[:, 0], real[:, 1], s=3, c="black", alpha=0.4, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, c="orange", alpha=0.7, label="generated")
    ax.set_xlim(axis[0], axis[-1])
    ax.set_ylim(axis[0], axis[-1])
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    return fig


def write_2d_figures(run_path, toy, real, samples, surface, axis, snapshots, scores) -> None:
    """training.gif (one frame per snapshot), samples.png (final) and losses.png."""
    frames = [
        figure_to_array(draw_2d(real, fake, frame_surface, axis, f"step {step}"))
        for step, fake, frame_surface in zip(
            snapshots["step"], snapshots["fake"], snapshots["surface"]
        )
    ]
    save_gif(run_path / "training.gif", frames, duration_ms=150)
    summary = ", ".join(f"{k} {v:.3g}" for k, v in scores.items() if not isinstance(v, list))
    save_figure(draw_2d(real, samples, surface, axis, summary), run_path / "samples.png")
    plot_losses(run_path, f"NumPy GAN on {toy} (log 4 = {np.log(4):.2f} at equilibrium)")


# ----------------------------------------------------------------------------- images


def write_image_figures(run_path, frames, samples, title: str) -> None:
    """training.gif (the fixed latents after every epoch), samples.png (64) and losses.png.

    frames: (E, H, W) or (E, H, W, 3) uint8 grids; samples: (N, C, S, S) in [0, 1].
    """
    shown = np.linspace(0, len(frames) - 1, min(len(frames), MAX_GIF_FRAMES))
    save_gif(
        run_path / "training.gif",
        [frames[i] for i in np.unique(shown.round().astype(int))],
        duration_ms=200,
        scale=2,
    )
    save_image_grid(run_path / "samples.png", samples[:64], nrow=8)
    plot_losses(run_path, title)


def class_cells(classes, n_classes: int, per_class: int) -> np.ndarray:
    """(n_classes, per_class) sample indices: row k holds the first `per_class` samples of class
    k, in sample order; -1 marks a blank cell (a class with fewer samples)."""
    classes = np.asarray(classes)
    cells = np.full((n_classes, per_class), -1, dtype=int)
    for k in range(n_classes):
        found = np.flatnonzero(classes == k)[:per_class]
        cells[k, : len(found)] = found
    return cells


def class_grid(samples, cells: np.ndarray) -> np.ndarray:
    """The cells' samples tiled as images_to_grid does, a row of cells a row of tiles; a blank
    cell (-1) is white, as the padding between tiles."""
    samples = np.asarray(samples, dtype=np.float32)
    blank = np.ones_like(samples[:1])
    tiles = np.concatenate([samples, blank])[cells.ravel()]  # index -1 picks the blank
    return images_to_grid(tiles, nrow=cells.shape[1])


def plot_by_class(path, samples, classes, names, per_class: int = 10, title: str = ""):
    """samples_by_class.png: one row per class 0..K-1, each with the first `per_class` samples
    of that class and labelled at the left with the class and how many of all the samples fell
    in it, so class balance and quality per class show at a glance.

    samples: (N, C, S, S) in [0, 1]; classes: (N,) the class of each sample (for an
    unconditional model the judge's reading, for a conditional one the class asked for);
    names: the K class names. Returns the cells (see class_cells).
    """
    samples = np.asarray(samples, dtype=np.float32)
    n_classes = len(names)
    cells = class_cells(classes, n_classes, per_class)
    counts = np.bincount(np.asarray(classes), minlength=n_classes)
    grid = class_grid(samples, cells)
    side = samples.shape[-1] + 1  # a tile and its 1-pixel padding
    fig, ax = plt.subplots(figsize=(0.45 * per_class + 1.2, 0.45 * n_classes + 0.5))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(1 + side * np.arange(n_classes) + side / 2 - 1)
    ax.set_yticklabels([f"{names[k]}  ({counts[k]})" for k in range(n_classes)], fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path)
    return cells
