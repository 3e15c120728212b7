"""Headless figures: loss curves, image grids and GIFs, saved atomically as PNG/GIF."""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

# Scripts only save files, so they draw off-screen (Agg) whether or not a display exists. In a
# Jupyter kernel, or when MPLBACKEND says otherwise, the backend is left alone so that inline
# figures still show.
if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from shared.checkpoint import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG (atomically) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_curves(
    path: str | os.PathLike,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str = "step",
    ylabel: str = "loss",
    title: str | None = None,
    logy: bool = False,
) -> Path:
    """One line per named (xs, ys) pair on shared axes."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=name, marker="." if len(xs) < 30 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return save_figure(fig, path)


def _to_numpy(images) -> np.ndarray:
    if hasattr(images, "detach"):
        images = images.detach().cpu().float().numpy()
    return np.asarray(images, dtype=np.float32)


def images_to_grid(images, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N,H,W) or (N,C,H,W) images in [0,1] into one (H',W') or (H',W',3) array."""
    x = _to_numpy(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N,H,W) or (N,C,H,W) with C in (1,3), got {x.shape}")
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol_rows = math.ceil(n / nrow)
    grid = np.ones((c, ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    grid = np.clip(grid, 0.0, 1.0)
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_image_grid(
    path: str | os.PathLike,
    images,
    nrow: int | None = None,
    titles: Sequence[str] | None = None,
    scale: int = 4,
) -> Path:
    """Save images as one PNG grid; with titles, each image gets a small caption."""
    x = _to_numpy(images)
    if titles is None:
        grid = images_to_grid(x, nrow)
        return save_image(path, grid, scale)
    n = len(x)
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    fig, axes = plt.subplots(rows, nrow, figsize=(1.3 * nrow, 1.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = x[i] if x.ndim == 3 else x[i].transpose(1, 2, 0)
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_title(titles[i], fontsize=8)
    return save_figure(fig, path)


def save_labelled_grid(
    path: str | os.PathLike,
    images,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    scale: float = 0.9,
) -> Path:
    """Images in row-major order as a len(row_labels) x len(col_labels) grid, each row and
    column named at its edge (a class per row, a setting per column)."""
    x = _to_numpy(images)
    rows, cols = len(row_labels), len(col_labels)
    if len(x) != rows * cols:
        raise ValueError(f"{len(x)} images do not fill {rows} rows x {cols} columns")
    fig, axes = plt.subplots(rows, cols, figsize=(scale * cols + 1, scale * rows + 0.4))
    axes = np.asarray(axes).reshape(rows, cols)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            img = x[i * cols + j]
            img = img[0] if img.ndim == 3 and img.shape[0] == 1 else img
            img = img.transpose(1, 2, 0) if img.ndim == 3 else img
            ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col_labels[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return save_figure(fig, path)


def _to_uint8(frame) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255).round().astype(np.uint8)
    return frame


def _scaled(frame: np.ndarray, scale: int) -> Image.Image:
    image = Image.fromarray(_to_uint8(frame))
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image


def save_image(path: str | os.PathLike, frame, scale: int = 1) -> Path:
    """One (H,W) or (H,W,3) array as a PNG, enlarged `scale` times without smoothing."""
    buffer = io.BytesIO()
    _scaled(frame, scale).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def save_gif(path: str | os.PathLike, frames, duration_ms: int = 100, scale: int = 1) -> Path:
    """An animated GIF from (H,W) or (H,W,3) frames (float in [0,1] or uint8), looping."""
    images = [_scaled(frame, scale) for frame in frames]
    if not images:
        raise ValueError("save_gif needs at least one frame")
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=0,
    )
    return atomic_write_bytes(path, buffer.getvalue())


def figure_to_array(fig, dpi: int = 80) -> np.ndarray:
    """Render a matplotlib figure to an (H,W,3) uint8 array (for GIF frames) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    buffer.seek(0)
    return np.array(Image.open(buffer).convert("RGB"))
