"""Detection data: generated scenes of digits with boxes, and readers for VOC and COCO files.

A scene is a grey canvas with a few digits pasted at random positions and sizes. Each digit's
box is the tight box around its ink, so the task is well defined: find every digit, name it,
and draw its box. Training scenes use training digits, held-out scenes use held-out digits.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.data import IMAGE_DATASETS, load_images, resize_images
from shared.errors import DataError

INK_THRESHOLD = 0.25  # a pixel brighter than this is part of the digit


@dataclass
class Scenes:
    """images (N, 1, H, W) float32 in [0, 1]; per image, boxes (K, 4) and labels (K,)."""

    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.images)


def _ink_box(patch: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of the pixels above the ink threshold, x2/y2 exclusive."""
    rows = np.flatnonzero(patch.max(axis=1) > INK_THRESHOLD)
    cols = np.flatnonzero(patch.max(axis=0) > INK_THRESHOLD)
    if len(rows) == 0:
        return None
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    top_left = np.maximum(box[:2], others[:, :2])
    bottom_right = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(others) - inter)


def make_scenes(
    n: int,
    split: str = "train",
    canvas: int = 64,
    max_digits: int = 4,
    min_size: int = 14,
    max_size: int = 26,
    max_overlap: float = 0.1,
    clutter: int = 0,
    dataset: str = "digits",
    data_dir=None,
    seed: int = 0,
) -> Scenes:
    """n scenes of 1..max_digits digits each.

    Digits are resized to a random side in [min_size, max_size] pixels and placed where their
    ink box overlaps no earlier box by more than max_overlap IoU (overlap control). `clutter`
    adds that many random strokes per scene that are not digits (distractors).
    """
    digits, digit_labels = load_images(dataset, split, data_dir)
    rng = np.random.default_rng(seed + (0 if split == "train" else 10_000))
    images = np.zeros((n, 1, canvas, canvas), dtype=np.float32)
    all_boxes, all_labels = [], []
    for i in range(n):
        boxes, labels = [], []
        for _ in range(rng.integers(1, max_digits + 1)):
            for _attempt in range(20):
                k = rng.integers(len(digits))
                side = int(rng.integers(min_size, max_size + 1))
                patch = np.clip(resize_images(digits[k, 0], side), 0, 1)
                ink = _ink_box(patch)
                if ink is None:
                    continue
                x0, y0 = rng.integers(0, canvas - side + 1, size=2)
                box = np.array([x0 + ink[0], y0 + ink[1], x0 + ink[2], y0 + ink[3]], float)
                if boxes and _iou(box, np.array(boxes)).max() > max_overlap:
                    continue
                region = images[i, 0, y0 : y0 + side, x0 : x0 + side]
                np.maximum(region, patch, out=region)
                boxes.append(box)
                labels.append(digit_labels[k])
                break
        for _ in range(clutter):
            _draw_stroke(images[i, 0], rng)
        all_boxes.append(np.array(boxes, dtype=np.float32).reshape(-1, 4))
        all_labels.append(np.array(labels, dtype=np.int64))
    return Scenes(images, all_boxes, all_labels, IMAGE_DATASETS[dataset].classes)


def _draw_stroke(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A short straight line of random brightness: ink that belongs to no digit."""
    length = rng.uniform(4, 10)
    angle = rng.uniform(0, np.pi)
    x0, y0 = rng.uniform(0, canvas.shape[1]), rng.uniform(0, canvas.shape[0])
    t = np.linspace(0, 1, 20)
    xs = np.clip((x0 + t * length * np.cos(angle)).astype(int), 0, canvas.shape[1] - 1)
    ys = np.clip((y0 + t * length * np.sin(angle)).astype(int), 0, canvas.shape[0] - 1)
    canvas[ys, xs] = np.maximum(canvas[ys, xs], rng.uniform(0.4, 1.0))


# ----------------------------------------------------------------------------- your own images


@dataclass
class Annotation:
    """One image's annotation: its file, size, boxes (K, 4) and class names."""

    filename: str
    width: int
    height: int
    boxes: np.ndarray
    names: list[str]


def read_voc(path: str | Path) -> Annotation:
    """A Pascal VOC XML file: <filename>, <size>, and one <object> (<name>, <bndbox>) per box."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        boxes, names = [], []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            boxes.append([float(bb.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")])
            names.append(obj.find("name").text.strip())
        return Annotation(
            root.find("filename").text.strip(),
            int(size.find("width").text),
            int(size.find("height").text),
            np.array(boxes, dtype=np.float32).reshape(-1, 4),
            names,
        )
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise DataError(f"{path} is not a readable Pascal VOC annotation ({err})") from None


def read_coco(path: str | Path) -> list[Annotation]:
    """A COCO JSON file: images, annotations with bbox = [x, y, width, height], categories."""
    path = Path(path)
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        names = {c["id"]: c["name"] for c in coco["categories"]}
        per_image = {img["id"]: ([], []) for img in coco["images"]}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            per_image[ann["image_id"]][0].append([x, y, x + w, y + h])
            per_image[ann["image_id"]][1].append(names[ann["category_id"]])
        return [
            Annotation(
                img["file_name"],
                int(img["width"]),
                int(img["height"]),
                np.array(per_image[img["id"]][0], dtype=np.float32).reshape(-1, 4),
                per_image[img["id"]][1],
            )
            for img in coco["images"]
        ]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path} is not a readable COCO annotation file ({err!r})") from None


def load_image_file(path: str | Path) -> np.ndarray:
    """Any image file as a grey (H, W) float32 array in [0, 1], light ink on a dark ground."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path} is not an image ({type(err).__name__})") from None
    # Our scenes are light digits on black; a dark-on-light picture is inverted to match.
    return 1.0 - grey if grey.mean() > 0.5 else grey


def scenes_from_annotations(
    annotations: list[Annotation], image_root: str | Path, canvas: int, classes=None
) -> Scenes:
    """Load the annotated images, resize each to canvas x canvas and scale its boxes to match."""
    classes = tuple(classes or sorted({n for a in annotations for n in a.names}))
    index = {name: i for i, name in enumerate(classes)}
    images, boxes, labels = [], [], []
    for ann in annotations:
        grey = load_image_file(Path(image_root) / ann.filename)
        h, w = grey.shape
        rows = _resize_matrix(h, canvas)
        cols = _resize_matrix(w, canvas)
        images.append((rows @ grey @ cols.T)[None].astype(np.float32))
        scale = np.array([canvas / w, canvas / h, canvas / w, canvas / h], dtype=np.float32)
        boxes.append(ann.boxes * scale)
        unknown = [n for n in ann.names if n not in index]
        if unknown:
            raise DataError(f"{ann.filename}: classes {unknown} not among {list(classes)}")
        labels.append(np.array([index[n] for n in ann.names], dtype=np.int64))
    return Scenes(np.stack(images), boxes, labels, classes)


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Area-averaging resize weights (n_out, n_in): each output pixel averages its input span."""
    edges = np.linspace(0, n_in, n_out + 1)
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(np.floor(lo)), int(np.ceil(hi))):
            weights[i, j] = min(hi, j + 1) - max(lo, j)
        weights[i] /= hi - lo
    return weights
