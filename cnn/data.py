"""Images in, arrays out: datasets, a folder of your own pictures, augmentation, normalisation.

Everything is NumPy (N, C, H, W) float32 in [0, 1] until `standardise`, so the NumPy CNN and
the PyTorch models see exactly the same pixels.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.data import IMAGE_DATASETS, load_images
from shared.errors import DataError, UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@contextmanager
def open_image(path: str | Path):
    """PIL's Image.open, with a one-line error for a missing, empty or unreadable file. Opening
    is lazy: reading `img.mode` costs only the header; pixels are decoded on first use."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"image {path} is empty")
    try:
        with Image.open(path) as img:
            yield img
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"{path} is not an image PIL can read ({type(err).__name__})") from None


def read_image(path: str | Path, channels: int, size: int) -> np.ndarray:
    """One picture file -> (channels, size, size) float32 in [0, 1]; UserError if unreadable."""
    with open_image(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        img = img.resize((size, size), Image.BILINEAR)
        pixels = np.asarray(img, dtype=np.float32) / 255.0
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def load_image_dir(root: str | Path, size: int, seed: int = 0, test_fraction: float = 0.2):
    """A folder with one subfolder per class -> (x_train, y_train, x_test, y_test, classes).

    Grayscale if every picture is, RGB otherwise; a stratified split that depends on the seed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--image-dir {root} is not a folder (expected one subfolder per class)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = [
        [f for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        for c in classes
    ]
    if len(classes) < 2 or any(len(f) < 2 for f in files):
        raise DataError(f"--image-dir {root} needs >= 2 class subfolders with >= 2 images each")
    modes = set()
    for group in files:
        for f in group:
            with open_image(f) as img:
                modes.add(img.mode)
    channels = 1 if modes <= {"L", "1", "I;16", "I"} else 3
    rng = np.random.default_rng(seed)
    parts = {"train": ([], []), "test": ([], [])}
    for label, group in enumerate(files):
        order = rng.permutation(len(group))
        n_test = max(1, int(round(len(group) * test_fraction)))
        for rank, i in enumerate(order):
            xs, ys = parts["test" if rank < n_test else "train"]
            xs.append(read_image(group[i], channels, size))
            ys.append(label)
    (x_train, y_train), (x_test, y_test) = (
        (np.stack(xs), np.array(ys, dtype=np.int64)) for xs, ys in parts.values()
    )
    return x_train, y_train, x_test, y_test, tuple(classes)


def load_dataset(name: str, image_dir: str, data_dir: str, size: int, seed: int):
    """(x_train, y_train, x_test, y_test, classes), images resized to size x size."""
    if image_dir:
        return load_image_dir(image_dir, size, seed)
    x_train, y_train = load_images(name, "train", data_dir=data_dir, size=size, seed=seed)
    x_test, y_test = load_images(name, "test", data_dir=data_dir, size=size, seed=seed)
    return x_train, y_train, x_test, y_test, IMAGE_DATASETS[name].classes


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the training images, (C,) each."""
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3)) + 1e-6


def standardise(x: np.ndarray, mean, std) -> np.ndarray:
    """(x - mean) / std per channel, ImageNet-style (with this dataset's statistics)."""
    mean = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(std, dtype=np.float32)[None, :, None, None]
    return ((x - mean) / std).astype(np.float32)


def draw_augmentation(rng: np.random.Generator, n: int, pad: int, flip: bool) -> np.ndarray:
    """Each image's random crop offset and mirror flag, (n, 3) ints: dy, dx in [0, 2 pad] and
    mirror in {0, 1}. Drawn for a whole global batch, so that every process draws the same
    numbers and keeps those of its own images (mirroring only where a mirror image is still
    the same class: not for digits)."""
    offsets = rng.integers(0, 2 * pad + 1, size=(2, n)) if pad > 0 else np.zeros((2, n), int)
    mirror = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    return np.column_stack([offsets[0], offsets[1], mirror])


def augment(x: np.ndarray, draws: np.ndarray, pad: int) -> np.ndarray:
    """Random crop with zero padding (shifts of up to `pad` pixels) and random horizontal
    flips, as drawn by `draw_augmentation`. x: (N, C, H, W), draws: (N, 3)."""
    N, _, H, W = x.shape
    dy, dx, mirror = draws.T
    out = x
    if pad > 0:
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        out = np.stack([padded[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W] for i in range(N)])
    if mirror.any():
        out = np.where(mirror[:, None, None, None] == 1, out[..., ::-1], out)
    return out
