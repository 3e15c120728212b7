"""The CIFAR loaders, proven offline: tiny files in CIFAR's published format (the Python pickle
batches of cifar-10-python.tar.gz and cifar-100-python.tar.gz), read back and trained on."""

import hashlib
import pickle

import numpy as np
import pytest
import torchvision
import train

from shared.cli import parse_config
from shared.data import load_images
from shared.state import read_state

# name: (folder, train files, test file, meta file, label key, label-names key, classes)
FORMATS = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
        10,
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        "test",
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
    ),
}


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_tiny_cifar(root, name, n_per_file, rng):
    """Pickled dicts as CIFAR ships them: data (N, 3072) uint8, rows of R then G then B planes
    of a 32x32 image; labels a list of ints. Returns the files' (name, md5) lists and pixels."""
    folder, train_files, test_file, meta_file, label_key, names_key, n_classes = FORMATS[name]
    (root / folder).mkdir(parents=True)
    written = {"train": [], "test": []}
    for split, files in (("train", train_files), ("test", [test_file])):
        for file in files:
            data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
            labels = rng.integers(0, n_classes, n_per_file).tolist()
            batch = {"batch_label": file, label_key: labels, "data": data}
            if name == "cifar100":
                batch["coarse_labels"] = [label // 5 for label in labels]
            (root / folder / file).write_bytes(pickle.dumps(batch, protocol=2))
            written[split].append((data, labels))
    meta = {names_key: [f"class {i}" for i in range(n_classes)]}
    (root / folder / meta_file).write_bytes(pickle.dumps(meta, protocol=2))
    listed = {
        split: [[file, _md5(root / folder / file)] for file in files]
        for split, files in (("train", train_files), ("test", [test_file]))
    }
    return listed, _md5(root / folder / meta_file), written


@pytest.fixture(params=["cifar10", "cifar100"])
def tiny_cifar(request, tmp_path, monkeypatch):
    """The tiny files, with torchvision told their checksums (it verifies every file)."""
    name = request.param
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    listed, meta_md5, written = write_tiny_cifar(tmp_path, name, 8, np.random.default_rng(0))
    monkeypatch.setattr(cls, "train_list", listed["train"])
    monkeypatch.setattr(cls, "test_list", listed["test"])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    return name, tmp_path, written


def test_cifar_loaders_read_the_published_format_pixel_for_pixel(tiny_cifar):
    name, root, written = tiny_cifar
    for split in ("train", "test"):
        x, y = load_images(name, split, data_dir=root)
        data = np.concatenate([d for d, _ in written[split]])
        expected = data.reshape(-1, 3, 32, 32).astype(np.float32) / 255  # R, G, B planes
        np.testing.assert_array_equal(x, expected)
        np.testing.assert_array_equal(y, np.concatenate([labels for _, labels in written[split]]))


def test_one_training_step_on_tiny_cifar_writes_a_colour_checkpoint(tiny_cifar, tmp_path):
    name, root, _ = tiny_cifar
    out = tmp_path / "run"
    flags = ["--dataset", name, "--data-dir", str(root), "--epochs", "1", "--batch-size", "64"]
    flags += ["--channels", "2", "3", "--hidden", "4", "--no-figures", "--out", str(out)]
    metrics = train.main(parse_config(train.TrainConfig, flags))
    n_train = 40 if name == "cifar10" else 8  # five batch files of 8, or one
    ckpt = read_state(out / "model.npz")
    assert n_train <= 64 and ckpt["step"] == 1  # one step: the whole set is one batch
    n_classes = FORMATS[name][-1]
    assert ckpt["model_config"]["in_channels"] == 3
    assert ckpt["model_config"]["num_classes"] == n_classes == len(ckpt["classes"])
    assert ckpt["model"]["12.W"].shape == (4, n_classes)  # the output layer
    assert metrics["dataset"] == name and (out / "metrics.json").exists()
