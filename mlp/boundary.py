"""Pictures of what a 2-D classifier has learned: its decision regions over a grid of points.

`boundary_frame` paints the picture with NumPy alone (fast enough for a GIF frame per epoch);
`plot_boundary` draws the same with matplotlib, axes and legend, for the final PNG.
"""

from __future__ import annotations

import numpy as np
from model import predict

# one colour per class (light for regions, dark for points); four_clusters needs four
REGION = np.array([[0.99, 0.80, 0.72], [0.76, 0.86, 0.97], [0.78, 0.93, 0.78], [0.94, 0.85, 0.96]])
POINT = np.array([[0.85, 0.33, 0.10], [0.12, 0.40, 0.75], [0.15, 0.60, 0.15], [0.55, 0.25, 0.65]])


def plot_extent(X: np.ndarray, margin: float = 0.15) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) around the points, with a margin."""
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = margin * (hi - lo)
    return lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1]


def grid_probs(model, task: str, extent, res: int) -> np.ndarray:
    """Class probabilities on a res x res grid over `extent`: (res, res, C), row 0 at the top."""
    x0, x1, y0, y1 = extent
    xs = np.linspace(x0, x1, res)
    ys = np.linspace(y1, y0, res)  # images count rows downwards
    gx, gy = np.meshgrid(xs, ys)  # each (res, res)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (res*res, 2)
    model.eval()
    dtype = model.layers[0].W.dtype
    return predict(model, points.astype(dtype), task).reshape(res, res, -1)


def boundary_frame(model, task: str, X, y, extent, res: int = 120) -> np.ndarray:
    """An (res, res, 3) uint8 image: regions tinted by class and confidence, data points on top."""
    probs = grid_probs(model, task, extent, res)  # (res, res, C)
    n_classes = probs.shape[-1]
    confidence = probs.max(axis=-1, keepdims=True)  # 1/C (unsure) .. 1 (sure)
    strength = (confidence - 1 / n_classes) / (1 - 1 / n_classes)
    image = 1.0 - strength * (1.0 - REGION[probs.argmax(axis=-1)])  # white where unsure
    x0, x1, y0, y1 = extent
    cols = np.clip(((X[:, 0] - x0) / (x1 - x0) * (res - 1)).round().astype(int), 1, res - 2)
    rows = np.clip(((y1 - X[:, 1]) / (y1 - y0) * (res - 1)).round().astype(int), 1, res - 2)
    for dr in (-1, 0, 1):  # each point a 3x3 square
        for dc in (-1, 0, 1):
            image[rows + dr, cols + dc] = POINT[y]
    return (image * 255).round().astype(np.uint8)  # a GIF frame; 8x smaller in a checkpoint


def plot_boundary(path, model, task: str, X, y, title: str = "") -> None:
    """A PNG of the decision regions with the points coloured by their true class."""
    import matplotlib.pyplot as plt

    from shared.plots import save_figure

    extent = plot_extent(X)
    probs = grid_probs(model, task, extent, 200)
    fig, ax = plt.subplots(figsize=(5, 5))
    strength = probs.max(axis=-1, keepdims=True)
    n_classes = probs.shape[-1]
    strength = (strength - 1 / n_classes) / (1 - 1 / n_classes)
    ax.imshow(1.0 - strength * (1.0 - REGION[probs.argmax(axis=-1)]), extent=extent)
    for c in np.unique(y):
        ax.scatter(*X[y == c].T, s=8, color=POINT[c], label=f"class {c}")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    save_figure(fig, path)
