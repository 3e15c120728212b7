"""Datasets that work offline, and real ones one flag away.

Embedded (no download): scikit-learn's bundled 8x8 digits, 2-D toy sets generated here, and a
text corpus built from the docstrings of Python's own standard library. Real datasets (MNIST,
Fashion-MNIST, CIFAR, tiny Shakespeare, names) are downloaded on first use into the data dir:
`--data-dir`, else $DLFS_DATA_DIR, else the user cache dir (~/.cache/dlfs).
"""

from __future__ import annotations

import ast
import functools
import gzip
import os
import sysconfig
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.checkpoint import atomic_write_bytes
from shared.errors import DataError, UserError

DATA_ENV = "DLFS_DATA_DIR"


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/dlfs (default ~/.cache/dlfs): the default data dir, and where derived
    files (trained judges) are kept, so that a shared, read-only data dir is never written."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "dlfs"


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $DLFS_DATA_DIR, else the user cache dir (~/.cache/dlfs)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return user_cache_dir()


def download(url: str, dest: str | os.PathLike, what: str, timeout: float = 30.0) -> Path:
    """Fetch url into dest (atomically); on failure say in one line what to place where."""
    dest = Path(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (OSError, ValueError) as err:
        raise DataError(
            f"could not download {what} from {url} ({type(err).__name__}); "
            f"place the file at {dest} yourself"
        ) from None
    return atomic_write_bytes(dest, data)


# ----------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageDataset:
    classes: tuple[str, ...]
    channels: int
    size: int


_DIGITS = tuple(str(d) for d in range(10))
IMAGE_DATASETS = {
    "digits": ImageDataset(_DIGITS, 1, 8),
    "mnist": ImageDataset(_DIGITS, 1, 28),
    "fashion-mnist": ImageDataset(
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        1,
        28,
    ),
    "cifar10": ImageDataset(
        ("airplane", "automobile", "bird", "cat", "deer")
        + ("dog", "frog", "horse", "ship", "truck"),
        3,
        32,
    ),
    "cifar100": ImageDataset(tuple(f"class {i}" for i in range(100)), 3, 32),
}


def _interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation with half-pixel centres.

    Output pixel i samples input coordinate (i + 0.5) * n_in / n_out - 0.5 (clamped at 0),
    the same convention as torch's interpolate(align_corners=False).
    """
    coords = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    left = np.minimum(np.floor(coords).astype(int), n_in - 1)
    right = np.minimum(left + 1, n_in - 1)
    frac = coords - left
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), left] += 1.0 - frac
    weights[np.arange(n_out), right] += frac
    return weights


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (..., H, W) images to (..., size, size), NumPy only."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    rows, cols = _interpolation_matrix(h, size), _interpolation_matrix(w, size)
    return (rows @ x.astype(np.float64) @ cols.T).astype(x.dtype)  # A X B^T, per image


def _split(n: int, labels: np.ndarray, split: str, seed: int, test_fraction: float = 0.2):
    """Indices of a stratified train/test split that depends only on the seed."""
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        test.extend(members[: int(round(len(members) * test_fraction))])
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def load_digits(split: str = "train", size: int = 8, seed: int = 0):
    """scikit-learn's bundled digits: x (N,1,size,size) float32 in [0,1], y int64."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    index = _split(len(labels), labels, split, seed)
    return resize_images(images[index], size), labels[index]


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array: magic 2049 = labels, 2051 = images."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} is unreadable ({err})") from None
    magic = int.from_bytes(data[0:4], "big")
    if magic not in (2049, 2051):
        raise DataError(f"{path} is not an IDX file (magic number {magic})")
    ndim = magic - 2048
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: {body.size} values for shape {tuple(shape)}")
    return body.reshape(shape)


_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _find_idx(raw: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (raw / name).exists():
            return raw / name
    return None


def load_idx_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None):
    """MNIST or Fashion-MNIST from torchvision's layout, downloading it if absent."""
    root = resolve_data_dir(data_dir)
    raw = root / _IDX_FOLDERS[name] / "raw"
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    if any(_find_idx(raw, stem) is None for stem in stems):
        _torchvision_download(name, root, raw, stems)
    images = _read_idx(_find_idx(raw, stems[0])).astype(np.float32) / 255.0
    labels = _read_idx(_find_idx(raw, stems[1])).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{raw}: {len(images)} images but {len(labels)} labels")
    return images[:, None], labels


def _torchvision_download(name: str, root: Path, raw: Path, stems) -> None:
    import torchvision

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    try:
        cls(str(root), train=True, download=True)
    except Exception as err:  # any failure of the download means the same thing to the user
        files = ", ".join(s + ".gz" for s in stems)
        raise DataError(
            f"{name} not found and could not be downloaded ({type(err).__name__}); "
            f"place {files} in {raw} (or pass --data-dir)"
        ) from None


def _load_cifar(name: str, split: str, data_dir):
    import torchvision

    root = resolve_data_dir(data_dir)
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        dataset = cls(str(root), train=split == "train", download=True)
    except Exception as err:
        archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
        raise DataError(
            f"{name} not found and could not be downloaded ({type(err).__name__}); "
            f"place {archive} in {root} (or pass --data-dir)"
        ) from None
    images = np.asarray(dataset.data, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0
    return images, np.asarray(dataset.targets, dtype=np.int64)


def load_images(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    size: int | None = None,
    seed: int = 0,
):
    """x float32 (N, C, H, W) in [0,1] and y int64 (N,); resized to `size` when given."""
    if name not in IMAGE_DATASETS:
        raise UserError(f"unknown image dataset {name!r} (choose from {', '.join(IMAGE_DATASETS)})")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "digits":
        return load_digits(split, size or 8, seed)
    if name in _IDX_FOLDERS:
        x, y = load_idx_dataset(name, split, data_dir)
    else:
        x, y = _load_cifar(name, split, data_dir)
    return (resize_images(x, size) if size else x), y


# ----------------------------------------------------------------------------- 2-D toy sets

TOY_DATASETS = ("xor", "moons", "circles", "spiral", "swiss_roll", "ring8", "four_clusters")
_TOY_NOISE = {
    "xor": 0.05,
    "moons": 0.1,
    "circles": 0.05,
    "spiral": 0.2,
    "swiss_roll": 0.1,
    "ring8": 0.05,
    "four_clusters": 0.3,
}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(folder: str | os.PathLike) -> list[Path]:
    """A folder's image files, recursively, in sorted order; none at all is a DataError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    return files


def read_square_image(path: str | os.PathLike, size: int, channels: int) -> np.ndarray:
    """One picture as float32 (channels, size, size) in [0, 1]: its centred square, resized
    bilinearly, read as grey (1 channel, ITU-R 601 luma) or colour (3)."""
    from PIL import Image, UnidentifiedImageError

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


def load_image_folder(folder: str | os.PathLike, size: int, channels: int) -> np.ndarray:
    """Every image of a folder (recursively), (N, channels, size, size) float32 in [0, 1].

    The memory the array needs is checked before any image is read."""
    from shared.runtime import check_fits_in_memory

    files = image_files(folder)
    check_fits_in_memory(4 * len(files) * channels * size * size, f"--image-size {size}")
    return np.stack([read_square_image(path, size, channels) for path in files])


def make_toy(name: str, n: int = 600, noise: float | None = None, seed: int = 0):
    """A 2-D classification set: X float64 (n, 2), y int64 (n,). Same seed, same points."""
    if name not in TOY_DATASETS:
        raise UserError(f"unknown toy dataset {name!r} (choose from {', '.join(TOY_DATASETS)})")
    rng = np.random.default_rng(seed)
    noise = _TOY_NOISE[name] if noise is None else noise
    if name == "xor":  # label = sign(x1) xor sign(x2)
        X = rng.uniform(-1, 1, size=(n, 2))
        y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64)
        X = X + noise * rng.standard_normal((n, 2))
    elif name == "moons":
        y = np.arange(n) % 2
        t = rng.uniform(0, np.pi, n)
        X = np.stack([np.cos(t), np.sin(t)], axis=1)
        X[y == 1] = np.stack([1 - np.cos(t[y == 1]), 0.5 - np.sin(t[y == 1])], axis=1)
        X += noise * rng.standard_normal((n, 2))
    elif name == "circles":  # inner circle radius 0.5 is class 1
        y = np.arange(n) % 2
        t = rng.uniform(0, 2 * np.pi, n)
        radius = np.where(y == 1, 0.5, 1.0)
        X = radius[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
        X += noise * rng.standard_normal((n, 2))
    elif name == "spiral":  # CS231n's three-armed spiral
        y = np.arange(n) % 3
        r = rng.uniform(0.05, 1.0, n)
        t = y * (2 * np.pi / 3) + 4.0 * r + noise * rng.standard_normal(n)
        X = r[:, None] * np.stack([np.sin(t), np.cos(t)], axis=1)
    elif name == "swiss_roll":  # two interleaved arms of a rolled sheet
        y = np.arange(n) % 2
        t = rng.uniform(0.5, 3.0, n) * np.pi
        X = (t / (3 * np.pi))[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
        X[y == 1] *= -1
        X += noise * 0.2 * rng.standard_normal((n, 2))
    elif name == "ring8":  # eight Gaussians on a circle of radius 2; label = mode
        y = rng.integers(0, 8, n)
        angles = y * (2 * np.pi / 8)
        X = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        X += noise * rng.standard_normal((n, 2))
    else:  # four_clusters at (+-1.5, +-1.5)
        y = np.arange(n) % 4
        centres = np.array([[1.5, 1.5], [-1.5, 1.5], [-1.5, -1.5], [1.5, -1.5]])
        X = centres[y] + noise * rng.standard_normal((n, 2))
    order = rng.permutation(n)
    return X[order].astype(np.float64), np.asarray(y, dtype=np.int64)[order]


def ring8_modes() -> np.ndarray:
    """(8, 2) centres of the ring8 Gaussians."""
    angles = np.arange(8) * (2 * np.pi / 8)
    return 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)


# ----------------------------------------------------------------------------- text

TEXT_DATASETS = ("stdlib", "shakespeare")
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"

# Pure-Python standard-library modules present in every Python from 3.10 on. Their docstrings
# are English prose about programming: a corpus every Python installation already has.
_STDLIB_MODULES = (
    "_pydecimal argparse ast asyncio base64 bisect calendar cmd code codecs collections "
    "concurrent configparser contextlib copy csv dataclasses datetime difflib doctest email "
    "enum filecmp fileinput fnmatch fractions ftplib functools getopt gettext glob gzip heapq "
    "hmac html http imaplib inspect ipaddress json locale logging mailbox mimetypes "
    "multiprocessing numbers operator optparse os pathlib pdb pickle pickletools platform "
    "plistlib pprint pydoc queue random re reprlib sched secrets selectors shlex shutil "
    "smtplib socket socketserver ssl statistics string subprocess tarfile tempfile textwrap "
    "threading timeit tokenize trace traceback turtle typing unittest urllib uuid warnings "
    "weakref xml zipfile"
).split()


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for module in _STDLIB_MODULES:
        single = root / f"{module}.py"
        files += [single] if single.exists() else sorted((root / module).rglob("*.py"))
    return files


def build_stdlib_corpus() -> str:
    """Docstrings of the modules above, in a fixed order, printable ASCII and newlines only."""
    docstrings = []
    for path in _stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    docstrings.append(doc)
    text = "\n\n".join(docstrings)
    return "".join(ch for ch in text if ch == "\n" or " " <= ch <= "~")


@functools.lru_cache(maxsize=1)
def _stdlib_corpus_cached() -> str:
    return build_stdlib_corpus()


def load_text(name: str = "stdlib", data_dir: str | os.PathLike | None = None) -> str:
    """'stdlib' (embedded), 'shakespeare' (downloaded once), or the path of a UTF-8 text file."""
    if name == "stdlib":
        return _stdlib_corpus_cached()
    if name == "shakespeare":
        path = resolve_data_dir(data_dir) / "shakespeare" / "input.txt"
        if not path.exists():
            download(SHAKESPEARE_URL, path, "tiny Shakespeare (input.txt)")
    else:
        path = Path(name)
        if not path.is_file():
            raise DataError(
                f"text file {path} does not exist (datasets: {', '.join(TEXT_DATASETS)})"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"text file {path} is not UTF-8 text") from None
    if not text:
        raise DataError(f"text file {path} is empty")
    return text


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """The first (1 - val_fraction) of the text for training, the rest for validation."""
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


def load_names(
    path: str | os.PathLike | None = None, data_dir=None, lower: bool = True
) -> list[str]:
    """One name per line: makemore's names.txt by default (downloaded once). Lower-cased unless
    `lower=False`, which keeps a file's own spelling ("Chloe" stays "Chloe")."""
    if path is None:
        path = resolve_data_dir(data_dir) / "names" / "names.txt"
        if not path.exists():
            download(NAMES_URL, path, "makemore's names.txt")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"names file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"names file {path} is not UTF-8 text") from None
    names = [line.strip().lower() if lower else line.strip() for line in text.splitlines()]
    names = [name for name in names if name]
    if not names:
        raise DataError(f"names file {path} has no names")
    return names
