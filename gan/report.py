"""The figures of both GANs: the 2-D GAN's decision surface and training GIF, the image GANs'
sample grids, training GIF and loss curves.

Inputs are NumPy arrays; the loss curves come from the run's log.jsonl, so neither training
script keeps a history of its own.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from shared.logging import read_log
from shared.plots import figure_to_array, plot_curves, save_figure, save_gif, save_image_grid

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
