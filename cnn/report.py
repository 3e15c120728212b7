"""The figures: curves, confusion matrix, mistakes, filters, feature maps, decision regions,
and an animation of the convolution itself.

    python report.py --out figures    # the convolution animation (needs no trained model)

Inputs are NumPy arrays (or a `predict` function from images to logits), so the NumPy CNN and
the PyTorch models share this file. The learning curves come from the run's log.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle

from shared.cli import arg, cli_main
from shared.logging import read_log
from shared.plots import figure_to_array, plot_curves, save_figure, save_gif, save_image_grid


def epoch_line(record: dict) -> str:
    """The line train.py prints after each epoch."""
    return (
        f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f}  test loss {record['test_loss']:.4f} "
        f"acc {record['test_accuracy']:.4f}"
    )


def epoch_history(path: Path) -> dict[str, list]:
    """{"epoch": [...], "train_loss": [...], ...} from the run's per-epoch log lines."""
    records = [r for r in read_log(path) if "epoch" in r]
    keys = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
    return {k: [r[k] for r in records] for k in keys}


def last_epoch(path: Path) -> dict:
    records = [r for r in read_log(path) if "epoch" in r]
    return records[-1] if records else {}


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


def first_layer(model, x_one: np.ndarray):
    """(filters (F, C, K, K), feature maps (F, H, W) of one image) of the first convolution;
    (None, None) for the MLP. The feature maps are taken after the first ReLU."""
    if hasattr(model, "first_layer_filters"):  # the NumPy CNN
        model.train(False)
        return model.first_layer_filters(), model.feature_maps(x_one)[0]
    import torch
    from model import first_conv

    conv = first_conv(model)
    if conv is None:
        return None, None
    model.eval()
    with torch.no_grad():
        maps = torch.relu(conv(torch.from_numpy(x_one).to(conv.weight.device)))[0]
    return conv.weight.detach().cpu().numpy(), maps.cpu().numpy()


def write_figures(path, model, predict, images, inputs, y_true, y_pred, classes) -> None:
    """Every figure of a finished run. images: test images in [0, 1] (N, C, H, W); inputs: the
    same standardised, as the model sees them; predict: inputs -> logits (N, classes)."""
    path = Path(path)
    history = epoch_history(path)
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
    plot_confusion_matrix(path / "confusion_matrix.png", y_true, y_pred, classes)
    plot_misclassified(path / "misclassified.png", images, y_true, y_pred, classes)
    filters, maps = first_layer(model, inputs[:1])
    if filters is not None:  # each filter's channels averaged when there are several
        shown = filters.mean(axis=1) if filters.shape[1] not in (1, 3) else filters
        save_image_grid(path / "filters.png", to_unit(shown), scale=8)
        save_image_grid(path / "feature_maps.png", to_unit(maps), scale=4)
    chosen = three_test_images(y_true)
    if chosen is not None:
        u, v, labels = decision_regions(predict, inputs[chosen])
        plot_decision_regions(
            path / "decision_regions.png", u, v, labels, images[chosen], y_true[chosen], classes
        )


def plot_confusion_matrix(path, y_true, y_pred, classes) -> None:
    counts = confusion_matrix(y_true, y_pred, len(classes))
    size = 0.45 * len(classes) + 2
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    if len(classes) <= 20:
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, [c[:12] for c in classes], rotation=90)
        ax.set_yticks(ticks, [c[:12] for c in classes])
        for i, j in zip(*np.nonzero(counts)):
            color = "white" if counts[i, j] > counts.max() / 2 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test accuracy {np.mean(y_true == y_pred):.4f}")
    save_figure(fig, path)


def show_image(ax, image: np.ndarray) -> None:
    """One (C, H, W) image in [0, 1], grey or colour, without axes."""
    picture = image.transpose(1, 2, 0)  # (H, W, C)
    ax.imshow(
        picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1
    )
    ax.axis("off")


def plot_misclassified(path, images, y_true, y_pred, classes) -> None:
    """Up to 24 test images the model got wrong, titled true -> predicted."""
    wrong = np.flatnonzero(y_true != y_pred)[:24]
    if not len(wrong):
        return
    ncol = min(len(wrong), 8)
    nrow = -(-len(wrong) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.3 * ncol, 1.7 * nrow), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        show_image(ax, images[i])
        ax.set_title(f"{classes[y_true[i]]}\n-> {classes[y_pred[i]]}", fontsize=7)
    save_figure(fig, path)


# ----------------------------------------------------------------------------- decision regions


def three_test_images(y: np.ndarray) -> np.ndarray | None:
    """Indices of the first test image of each of the first three classes that occur."""
    labels = [c for c in np.unique(y)][:3]
    if len(labels) < 3:
        return None
    return np.array([int(np.flatnonzero(y == c)[0]) for c in labels])


def decision_regions(predict, anchors: np.ndarray, lo=-0.5, hi=1.5, n=61):
    """The predicted class on the plane through three images a, b, c (image space):

        x(u, v) = a + u (b - a) + v (c - a),   so a = x(0, 0), b = x(1, 0), c = x(0, 1).

    anchors: (3, C, H, W). Returns the grid u (n,), v (n,) and labels (n, n), labels[i, j]
    the class predicted at x(u[j], v[i])."""
    a, b, c = anchors.astype(np.float32)
    u = np.linspace(lo, hi, n, dtype=np.float32)
    v = np.linspace(lo, hi, n, dtype=np.float32)
    uu, vv = np.meshgrid(u, v)  # (n, n) each; row i is v[i]
    points = a + uu.reshape(-1, 1, 1, 1) * (b - a) + vv.reshape(-1, 1, 1, 1) * (c - a)
    labels = predict(points.astype(np.float32)).argmax(axis=1)  # (n*n,)
    return u, v, labels.reshape(n, n)


def plot_decision_regions(path, u, v, labels, images, y_anchor, classes) -> None:
    """Each point of the plane coloured by its predicted class; the three images marked."""
    present = np.unique(np.concatenate([labels.ravel(), y_anchor]))
    palette = plt.get_cmap("tab20" if len(present) > 10 else "tab10")
    colours = ListedColormap([palette(k % palette.N) for k in range(len(present))])
    index = np.searchsorted(present, labels)  # class -> its colour's position
    fig = plt.figure(figsize=(8.5, 5.5))
    ax = fig.add_axes([0.07, 0.1, 0.6, 0.8])
    extent = (u[0], u[-1], v[0], v[-1])
    ax.imshow(
        index,
        origin="lower",
        extent=extent,
        cmap=colours,
        vmin=-0.5,
        vmax=len(present) - 0.5,
        interpolation="nearest",
        aspect="auto",
    )
    for (x, y), label, name in zip(((0, 0), (1, 0), (0, 1)), y_anchor, "abc"):
        ax.plot(x, y, "o", markersize=10, markerfacecolor="white", markeredgecolor="black")
        ax.annotate(f"{name}: {classes[label]}", (x, y), xytext=(6, 6), textcoords="offset points")
    ax.set_xlabel("u  (x = a + u (b - a) + v (c - a))")
    ax.set_ylabel("v")
    ax.set_title("predicted class on the plane through three test images")
    handles = [Rectangle((0, 0), 1, 1, color=colours(k)) for k in range(len(present))]
    ax.legend(
        handles,
        [classes[k][:12] for k in present],
        loc="upper left",
        bbox_to_anchor=(1.02, 0.45),
        fontsize=8,
        title="predicted",
    )
    for k, (image, name) in enumerate(zip(images, "abc")):
        inset = fig.add_axes([0.72 + 0.085 * k, 0.68, 0.08, 0.16])
        show_image(inset, image)
        inset.set_title(name, fontsize=9)
    save_figure(fig, path)


# ----------------------------------------------------------------------------- convolution GIF


def convolution_steps(x: np.ndarray, w: np.ndarray, stride: int, pad: int):
    """The output of a one-channel convolution in the order the kernel visits it.

    x: (H, W), w: (K, K). Returns [(i, j, y[i, j]), ...] in raster order, with
    y[i, j] = sum_{p,q} w[p, q] x_pad[i*S + p, j*S + q]."""
    K = w.shape[0]
    x_pad = np.pad(x, pad)
    Ho = (x.shape[0] + 2 * pad - K) // stride + 1
    Wo = (x.shape[1] + 2 * pad - K) // stride + 1
    steps = []
    for i in range(Ho):
        for j in range(Wo):
            window = x_pad[i * stride : i * stride + K, j * stride : j * stride + K]
            steps.append((i, j, float((window * w).sum())))
    return steps


def _draw_grid(ax, values, shade=None, fmt="{:g}"):
    """A matrix of numbers as labelled cells; shade: boolean mask of cells drawn grey."""
    rows, cols = values.shape
    for r in range(rows):
        for c in range(cols):
            grey = shade is not None and shade[r, c]
            ax.add_patch(
                Rectangle(
                    (c, r), 1, 1, facecolor="#dddddd" if grey else "white", edgecolor="#888888"
                )
            )
            if not np.isnan(values[r, c]):
                ax.text(
                    c + 0.5,
                    r + 0.5,
                    fmt.format(values[r, c]),
                    ha="center",
                    va="center",
                    fontsize=11,
                    color="#777777" if grey else "black",
                )
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_aspect("equal")
    ax.axis("off")


def convolution_frames(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> list[np.ndarray]:
    """One frame per output pixel: the padded input with the kernel's window outlined, the
    kernel, and the output filled in up to that pixel."""
    K = w.shape[0]
    steps = convolution_steps(x, w, stride, pad)
    Ho, Wo = steps[-1][0] + 1, steps[-1][1] + 1
    x_pad = np.pad(x, pad).astype(float)
    padding = np.ones_like(x_pad, dtype=bool)
    padding[pad : pad + x.shape[0], pad : pad + x.shape[1]] = False
    y = np.full((Ho, Wo), np.nan)
    frames = []
    for i, j, value in steps:
        y[i, j] = value
        fig, axes = plt.subplots(
            1, 3, figsize=(9, 3.4), width_ratios=(x_pad.shape[1], K + 1, Wo + 1)
        )
        _draw_grid(axes[0], x_pad, shade=padding)
        axes[0].add_patch(
            Rectangle((j * stride, i * stride), K, K, fill=False, edgecolor="red", linewidth=3)
        )
        axes[0].set_title(f"input, padding {pad} (grey), stride {stride}", fontsize=10)
        _draw_grid(axes[1], w.astype(float))
        axes[1].set_title("kernel", fontsize=10)
        _draw_grid(axes[2], y)
        axes[2].add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="red", linewidth=3))
        axes[2].set_title(f"output y[{i},{j}] = {value:g}", fontsize=10)
        frames.append(figure_to_array(fig))
    return frames


def write_convolution_gif(path) -> Path:
    """The classic example: a 5x5 input, a 3x3 kernel, padding 1, stride 2 -> a 3x3 output."""
    x = np.array(
        [[3, 1, 0, 2, 1], [0, 2, 1, 3, 0], [1, 0, 2, 1, 2], [2, 3, 0, 1, 1], [0, 1, 3, 2, 0]]
    )
    w = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]])  # a Sobel kernel: horizontal change
    frames = convolution_frames(x, w, stride=2, pad=1)
    return save_gif(path, frames + frames[-1:] * 2, duration_ms=900)


@dataclass
class ReportConfig:
    out: str = arg("figures", "folder for convolution.gif")


def main(cfg: ReportConfig) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    print(write_convolution_gif(out / "convolution.gif"))


if __name__ == "__main__":
    cli_main(main, ReportConfig)
