"""The figures of a run: the training loss, precision-recall curves beside the validation mAP
of every epoch, and detections drawn on held-out scenes.

Kept out of train.py so that the training loop reads in one screen; the curves come from the
run folder's log.jsonl and the evaluation's results.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.patches as patches
import matplotlib.pyplot as plt

from shared.logging import read_log
from shared.plots import plot_curves, save_figure

LABEL_FONT = 7  # points


def label_boxes(boxes, sizes, bounds):
    """Where to write each box's label: (x1, y1, x2, y2) in the image's pixels (y downwards).

    `sizes` holds each label's (width, height) in pixels, `bounds` the image's (width, height).
    A label sits on its box's top edge, outside the box, unless that leaves the image, covers a
    label already placed, or covers another box; then it tries inside the top edge, below the
    box, and inside the bottom edge. Where every place covers another box it takes the first
    that covers no label, and failing that the first inside the image. Labels placed earlier
    (higher scores) keep their first choice.
    """
    placed = []
    for i, ((x1, y1, _, y2), (width, height)) in enumerate(zip(boxes, sizes)):
        others = [tuple(map(float, b)) for j, b in enumerate(boxes) if j != i]
        left = min(max(0.0, float(x1)), bounds[0] - width)
        tops = (y1 - height, y1, y2, y2 - height)
        options = [(left, float(top), left + width, float(top) + height) for top in tops]
        fits = [o for o in options if o[1] >= 0 and o[3] <= bounds[1]] or options
        free = [o for o in fits if not any(_overlap(o, other) for other in placed)]
        clear = [o for o in free if not any(_overlap(o, box) for box in others)]
        placed.append((clear or free or fits)[0])
    return placed


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _text_size(ax, text: str) -> tuple[float, float]:
    """A label's (width, height) in the axes' data units (the image's pixels), as drawn."""
    probe = ax.text(0, 0, text, fontsize=LABEL_FONT)
    extent = probe.get_window_extent(ax.figure.canvas.get_renderer())
    probe.remove()
    (x0, y0), (x1, y1) = ax.transData.inverted().transform(
        [[extent.x0, extent.y0], [extent.x1, extent.y1]]
    )
    return abs(x1 - x0), abs(y1 - y0)


def draw_detections(ax, boxes, scores, labels, classes, colours=None) -> None:
    """Rectangles and 'class score' labels on an image already shown in `ax`; no label covers
    another, nor another box where there is room (see label_boxes). Each label has a dark
    ground, so a line crossing it cannot hide it."""
    colours = colours or plt.cm.tab10.colors
    texts = [f"{classes[int(label)]} {float(score):.2f}" for score, label in zip(scores, labels)]
    bounds = (max(ax.get_xlim()), max(ax.get_ylim()))
    spots = label_boxes(boxes, [_text_size(ax, t) for t in texts], bounds)
    for box, label, text, spot in zip(boxes, labels, texts, spots):
        colour = colours[int(label) % len(colours)]
        x1, y1, x2, y2 = (float(v) for v in box)
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour))
        ax.text(
            *spot[:2],
            text,
            color=colour,
            fontsize=LABEL_FONT,
            va="top",
            ha="left",
            zorder=3,
            bbox=dict(facecolor="black", alpha=0.7, pad=0.2, lw=0),
        )


def plot_detections(path, scenes, predictions, score_threshold=0.5, n=8):
    """Held-out scenes with true boxes (dashed white) and detections (coloured, labelled)."""
    n = min(n, len(scenes))
    cols = math.ceil(n / 2)
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.6), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, i in zip(axes.flat, range(n)):
        ax.imshow(scenes.images[i, 0], cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
        for box in scenes.boxes[i]:
            ax.add_patch(
                patches.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, ec="white", ls="--")
            )
        boxes, scores, labels = predictions[i]
        shown = scores >= score_threshold
        draw_detections(ax, boxes[shown], scores[shown], labels[shown], scenes.classes)
    save_figure(fig, path)


def pr_and_map_figure(path, run_path: Path, voc: dict, classes, detector: str) -> None:
    """Left: each class's precision-recall curve on the test scenes. Right: mAP@0.5 on the
    validation scenes after every epoch, from log.jsonl."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, (precision, recall) in voc["curves"].items():
        left.plot(recall, precision, label=f"{classes[label]} AP {voc['ap'][label]:.2f}")
    left.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title=f"{detector}: test mAP@0.5 = {voc['map']:.3f}",
    )
    left.legend(fontsize=7, loc="lower left")
    epochs = [r for r in read_log(run_path) if "val_map50" in r]
    right.plot([r["epoch"] for r in epochs], [r["val_map50"] for r in epochs], marker="o")
    right.set(xlabel="epoch", ylabel="mAP@0.5", ylim=(0, 1.02), title="validation mAP@0.5")
    right.grid(alpha=0.3)
    save_figure(fig, path)


def write_figures(run_path: Path, test, result: dict, detector: str) -> None:
    """loss.png, pr_curves.png (with the validation mAP per epoch) and detections.png."""
    records = [r for r in read_log(run_path) if "loss" in r]
    plot_curves(
        run_path / "loss.png",
        {"train": ([r["step"] for r in records], [r["loss"] for r in records])},
        xlabel="step",
        ylabel="total loss",
        logy=True,
    )
    pr_and_map_figure(run_path / "pr_curves.png", run_path, result["voc"], test.classes, detector)
    plot_detections(run_path / "detections.png", test, result["predictions"])
