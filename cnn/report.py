"""The figures every run writes: curves, confusion matrix, mistakes, filters, feature maps.

Inputs are NumPy arrays, so the NumPy CNN and the PyTorch models share this file.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from shared.plots import plot_curves, save_figure, save_image_grid


def to_unit(x: np.ndarray) -> np.ndarray:
    """Rescale each image (first axis) to [0, 1] for display."""
    flat = x.reshape(len(x), -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    shape = (len(x),) + (1,) * (x.ndim - 1)
    return (x - low.reshape(shape)) / np.maximum(high - low, 1e-12).reshape(shape)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """counts[i, j] = how many images of class i were predicted as class j."""
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def write_figures(
    path: Path,
    history: dict,
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: tuple[str, ...],
    filters: np.ndarray | None,
    feature_maps: np.ndarray | None,
) -> None:
    """history: {"epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy"} lists;
    images: test images in [0, 1]; filters (F, C, K, K); feature_maps (F, H, W) of images[0]."""
    epochs = history["epoch"]
    plot_curves(
        path / "loss.png",
        {"train": (epochs, history["train_loss"]), "test": (epochs, history["test_loss"])},
        xlabel="epoch",
        ylabel="cross-entropy",
    )
    plot_curves(
        path / "accuracy.png",
        {"train": (epochs, history["train_accuracy"]), "test": (epochs, history["test_accuracy"])},
        xlabel="epoch",
        ylabel="accuracy",
    )

    counts = confusion_matrix(y_true, y_pred, len(classes))
    size = 0.45 * len(classes) + 2
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    if len(classes) <= 20:
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, [c[:10] for c in classes], rotation=90)
        ax.set_yticks(ticks, [c[:10] for c in classes])
        for i, j in zip(*np.nonzero(counts)):
            color = "white" if counts[i, j] > counts.max() / 2 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test accuracy {np.mean(y_true == y_pred):.4f}")
    save_figure(fig, path / "confusion_matrix.png")

    wrong = np.flatnonzero(y_true != y_pred)[:24]
    if len(wrong):  # drawn here: shared's captioned grid handles grayscale only
        ncol = min(len(wrong), 8)
        nrow = -(-len(wrong) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(1.3 * ncol, 1.5 * nrow), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i in zip(axes.flat, wrong):
            picture = images[i].transpose(1, 2, 0)  # (H, W, C)
            ax.imshow(
                picture.squeeze(-1) if picture.shape[-1] == 1 else picture,
                cmap="gray",
                vmin=0,
                vmax=1,
            )
            ax.set_title(f"{classes[y_true[i]][:6]}->{classes[y_pred[i]][:6]}", fontsize=8)
        save_figure(fig, path / "misclassified.png")
    if filters is not None:  # each filter's channels averaged when there are several
        shown = filters.mean(axis=1) if filters.shape[1] not in (1, 3) else filters
        save_image_grid(path / "filters.png", to_unit(shown), scale=8)
    if feature_maps is not None:
        save_image_grid(path / "feature_maps.png", to_unit(feature_maps), scale=4)
