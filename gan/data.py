"""Training images for the image GANs: the shared datasets, or any folder of pictures.

A folder is read recursively (PNG, JPEG, BMP, GIF, WebP, TIFF); each picture is cropped to its
centred square, resized to the side asked for, and read as grey (1 channel) or colour (3).
Folders have no labels and no test split: the GANs train on every image in them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.data import IMAGE_DATASETS, load_images
from shared.errors import DataError
from shared.runtime import check_fits_in_memory

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
NATIVE_SIZES = {"digits": 16, "mnist": 28, "fashion-mnist": 28}  # the judge's sides


def image_files(folder: str | Path) -> list[Path]:
    """The folder's image files, recursively, in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    return files


def read_square(path: Path, size: int, channels: int) -> np.ndarray:
    """One picture as float32 (channels, size, size) in [0, 1]: centred square, bilinear resize."""
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
            image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable image ({type(err).__name__})") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (C, S, S)


def load_folder(folder: str | Path, size: int, channels: int) -> np.ndarray:
    """Every image of the folder, (N, channels, size, size) float32 in [0, 1]."""
    files = image_files(folder)
    check_fits_in_memory(4 * len(files) * channels * size * size, f"--image-size {size}")
    return np.stack([read_square(path, size, channels) for path in files])


def load_training_images(
    dataset: str, size: int, data_dir: str, image_dir: str, channels: int, seed: int
):
    """(x_train in [0, 1] (N, C, S, S), y_train (N,) or None, n_classes) for a name or a folder."""
    if dataset == "folder":
        return load_folder(image_dir, size, channels), None, 0
    x, y = load_images(dataset, "train", data_dir, size=size, seed=seed)
    return x, y, len(IMAGE_DATASETS[dataset].classes)
