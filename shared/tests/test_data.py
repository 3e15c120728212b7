import gzip
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.data import (
    TOY_DATASETS,
    build_stdlib_corpus,
    load_images,
    load_names,
    load_text,
    make_toy,
    resize_images,
    resolve_data_dir,
    split_text,
)
from shared.errors import DataError, UserError


def test_data_dir_prefers_the_flag_then_the_environment_then_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLFS_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_data_dir("") == tmp_path / "env"
    monkeypatch.delenv("DLFS_DATA_DIR")
    assert resolve_data_dir(None) == tmp_path / "cache" / "dlfs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir(None).parts[-2:] == (".cache", "dlfs")


def test_digits_split_is_fixed_by_seed_stratified_and_disjoint():
    x_train, y_train = load_images("digits", "train")
    x_test, y_test = load_images("digits", "test")
    assert x_train.shape == (1438, 1, 8, 8) and x_test.shape == (359, 1, 8, 8)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert np.all(np.bincount(y_test) >= 35)
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    overlap = sum(row.tobytes() in train_rows for row in x_test.reshape(len(x_test), -1))
    assert overlap <= 2  # a couple of digits are exact duplicates in the dataset itself
    np.testing.assert_array_equal(load_images("digits", "test")[0], x_test)
    assert not np.array_equal(load_images("digits", "test", seed=1)[1], y_test)


@pytest.mark.parametrize("size", [4, 16, 28, 32])
def test_resize_matches_torch_bilinear_interpolation(size):
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    ours = resize_images(x, size)
    theirs = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear")
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)


def test_resized_digits_have_the_asked_size():
    x, _ = load_images("digits", "train", size=16)
    assert x.shape == (1438, 1, 16, 16)


def _write_idx(path, array, magic, compress):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_loader_reads_files_in_torchvision_layout(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28))
    labels = rng.integers(0, 10, 7)
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", images, 2051, compress=True)
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels, 2049, compress=False)
    x, y = load_images(name, "test", data_dir=tmp_path)
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0] * 255, images)
    np.testing.assert_array_equal(y, labels)
    assert load_images(name, "test", data_dir=tmp_path, size=16)[0].shape == (7, 1, 16, 16)


def test_truncated_idx_file_is_a_data_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28)), 2051, compress=False)
    data = (raw / "t10k-images-idx3-ubyte").read_bytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(data[:-10])
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(3), 2049, compress=False)
    with pytest.raises(DataError, match="truncated"):
        load_images("mnist", "test", data_dir=tmp_path)


def test_missing_mnist_without_network_says_what_to_place_where(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "__init__", offline)
    with pytest.raises(DataError) as info:
        load_images("mnist", "train", data_dir=tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "\n" not in message


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match="unknown image dataset"):
        load_images("imagenet", "train")


def test_stdlib_corpus_is_identical_across_two_builds_in_separate_processes():
    code = "from shared.data import build_stdlib_corpus as b; import hashlib;"
    code += "print(hashlib.sha256(b().encode()).hexdigest())"
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(digests) == 1
    text = build_stdlib_corpus()
    import hashlib

    assert hashlib.sha256(text.encode()).hexdigest() in digests


def test_stdlib_corpus_is_large_printable_ascii_prose():
    text = load_text("stdlib")
    assert len(text) > 500_000
    assert set(text) <= {"\n"} | {chr(c) for c in range(32, 127)}
    assert "Return" in text


def test_text_file_loading_and_split(tmp_path):
    (tmp_path / "tiny.txt").write_text("hello world\n" * 10, encoding="utf-8")
    text = load_text(str(tmp_path / "tiny.txt"))
    train, val = split_text(text, 0.1)
    assert train + val == text and len(val) == 12


def test_missing_text_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_text(str(tmp_path / "none.txt"))


def test_shakespeare_is_read_from_the_data_dir(tmp_path):
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare" / "input.txt").write_text("First Citizen:\nBefore we proceed")
    assert load_text("shakespeare", tmp_path).startswith("First Citizen")


def test_failed_download_names_the_file_to_place(tmp_path):
    with pytest.raises(DataError) as info:
        load_text("shakespeare", tmp_path / "nothing-here")  # no network on our machines
    assert str(tmp_path / "nothing-here" / "shakespeare" / "input.txt") in str(info.value)


def test_names_are_lowercased_nonempty_lines(tmp_path):
    (tmp_path / "names.txt").write_text("Emma\n\nOlivia\nava")
    assert load_names(tmp_path / "names.txt") == ["emma", "olivia", "ava"]
    (tmp_path / "latin1.txt").write_bytes("Zo\xeb\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_names(tmp_path / "latin1.txt")


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_sets_are_seeded_two_dimensional_and_labelled(name):
    X, y = make_toy(name, n=300, seed=3)
    X2, y2 = make_toy(name, n=300, seed=3)
    assert X.shape == (300, 2) and y.shape == (300,) and X.dtype == np.float64
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert len(np.unique(y)) >= 2


def test_ring8_points_sit_near_their_mode():
    from shared.data import ring8_modes

    X, y = make_toy("ring8", n=800, seed=0)
    distance = np.linalg.norm(X - ring8_modes()[y], axis=1)
    assert distance.mean() < 0.1 and len(np.unique(y)) == 8


def test_names_keep_their_spelling_when_asked(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("Chloe\n\nemma\n")
    assert load_names(path) == ["chloe", "emma"]
    assert load_names(path, lower=False) == ["Chloe", "emma"]


def test_an_image_folder_is_read_as_centred_squares_and_a_bad_file_is_named(tmp_path):
    from PIL import Image

    from shared.data import load_image_folder

    wide = np.zeros((4, 8, 3), np.uint8)
    wide[:, 2:6] = 255  # the centred 4x4 square is all white, the sides black
    Image.fromarray(wide).save(tmp_path / "a.png")
    Image.fromarray(np.full((6, 6), 51, np.uint8)).save(tmp_path / "b.bmp")
    x = load_image_folder(tmp_path, size=2, channels=1)
    assert x.shape == (2, 1, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 1.0)
    np.testing.assert_allclose(x[1], 0.2)
    (tmp_path / "c.jpg").write_text("not an image")
    with pytest.raises(DataError, match=r"c\.jpg is not a readable image"):
        load_image_folder(tmp_path, size=2, channels=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path / "empty", size=2, channels=1)
