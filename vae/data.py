"""Images for the VAE: the embedded digits, MNIST-like sets via shared.data, or your own folder.

A folder of images becomes a dataset the way torchvision's ImageFolder does it: an image in
a sub-folder gets that sub-folder's name as its class; images directly in the folder share one
class. Every image is read as RGB and resized (bilinear) to a square.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.data import IMAGE_DATASETS, IMAGE_SUFFIXES, load_images
from shared.errors import DataError

# Training + test images of each named set, known before reading it (for the memory estimate).
N_IMAGES = {"digits": 1797, "mnist": 70_000, "fashion-mnist": 70_000}


def read_image(path: str | Path, channels: int, size: int) -> np.ndarray:
    """One image file as a float32 (channels, size, size) array in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            image = image.resize((size, size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable image ({type(err).__name__})") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (C, H, W)


def image_paths(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(folder: str | Path, size: int, seed: int = 0, test_fraction: float = 0.1):
    """(x_train, y_train, x_test, y_test, class names) from a folder of images, RGB."""
    folder = Path(folder)
    paths = image_paths(folder)
    if len(paths) < 2:
        raise DataError(f"image folder {folder} holds {len(paths)} images; need at least 2")
    class_of = [p.parent.relative_to(folder).parts[:1] for p in paths]
    class_names = sorted({parts[0] if parts else "." for parts in class_of})
    labels = np.array(
        [class_names.index(parts[0] if parts else ".") for parts in class_of], dtype=np.int64
    )
    images = np.stack([read_image(p, 3, size) for p in paths])  # (N, 3, size, size)
    order = np.random.default_rng(seed).permutation(len(paths))
    n_test = max(1, int(round(len(paths) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test], class_names


def load_dataset(name: str, image_dir: str, size: int, data_dir: str, seed: int):
    """(x_train, y_train, x_test, y_test, class names); x float32 (N, C, size, size) in [0,1]."""
    if image_dir:
        return load_image_folder(image_dir, size, seed)
    x_train, y_train = load_images(name, "train", data_dir=data_dir, size=size, seed=seed)
    x_test, y_test = load_images(name, "test", data_dir=data_dir, size=size, seed=seed)
    return x_train, y_train, x_test, y_test, list(IMAGE_DATASETS[name].classes)


def count_images(name: str, image_dir: str) -> int:
    """How many images load_dataset will return, without reading them."""
    return len(image_paths(Path(image_dir))) if image_dir else N_IMAGES[name]
