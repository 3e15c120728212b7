"""Training images for the diffusion model: the shared datasets, or any folder of pictures.

Images come back as float32 (N, C, H, W) scaled to [-1, 1], the range the forward process
assumes (x_T ~ N(0, I) should dwarf the data), with labels, or None for a folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.data import IMAGE_DATASETS, load_images
from shared.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_folder(folder: str | Path, size: int, channels: int) -> np.ndarray:
    """Every image in a folder (recursively), centre-cropped square, resized, in [0, 1]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = image.crop((left, top, left + side, top + side))
                image = image.resize((size, size), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read image {path}: {err}") from None
        images.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    return np.stack(images)  # (N, C, size, size)


def load_training_images(
    dataset: str, size: int, data_dir: str = "", folder: str = "", channels: int = 1
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(x in [-1, 1], labels or None, number of classes) for a dataset name or a folder."""
    if dataset == "folder":
        x, y, n_classes = load_folder(folder, size, channels), None, 0
    else:
        x, y = load_images(dataset, "train", data_dir or None, size=size)
        n_classes = len(IMAGE_DATASETS[dataset].classes)
    return x * 2 - 1, y, n_classes
