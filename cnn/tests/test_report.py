"""The figures of report.py and the sweep, on tiny settings, checked against values computed
independently (torch's convolution, interpolation written out by hand, each run's metrics)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from report import convolution_frames, convolution_steps, decision_regions, write_convolution_gif

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shape, kernel, stride, pad", [((5, 5), 3, 2, 1), ((4, 6), 2, 1, 0)])
def test_convolution_steps_fill_torchs_output_in_raster_order(shape, kernel, stride, pad):
    rng = np.random.default_rng(0)
    x, w = rng.integers(-3, 4, shape), rng.integers(-2, 3, (kernel, kernel))
    expected = F.conv2d(
        torch.tensor(x, dtype=torch.float64)[None, None],
        torch.tensor(w, dtype=torch.float64)[None, None],
        stride=stride,
        padding=pad,
    )[0, 0].numpy()
    steps = convolution_steps(x, w, stride, pad)
    assert [(i, j) for i, j, _ in steps] == list(np.ndindex(expected.shape))
    assert [value for _, _, value in steps] == list(expected.ravel())


def test_the_convolution_gif_has_one_distinct_frame_per_output_pixel(tmp_path):
    x, w = np.arange(16).reshape(4, 4) % 3, np.array([[1, -1], [0, 2]])
    frames = convolution_frames(x, w, stride=2, pad=1)
    assert len(frames) == 9  # (4 + 2 - 2) / 2 + 1 = 3 per side
    assert all((a != b).any() for a, b in zip(frames, frames[1:]))
    path = write_convolution_gif(tmp_path / "convolution.gif")
    with Image.open(path) as gif:
        assert gif.n_frames >= 9  # 3x3 outputs; the held last frame may merge with its copy


def test_decision_regions_colour_each_point_of_the_plane_by_its_predicted_class():
    rng = np.random.default_rng(1)
    anchors = rng.standard_normal((3, 1, 4, 4)).astype(np.float32)

    def nearest_anchor(x):  # logits: minus the squared distance to each of the three images
        flat = x.reshape(len(x), -1)
        return -((flat[:, None, :] - anchors.reshape(1, 3, -1)) ** 2).sum(axis=2)

    u, v, labels = decision_regions(nearest_anchor, anchors, lo=-0.5, hi=1.5, n=9)
    assert labels.shape == (9, 9) and u[0] == -0.5 and v[-1] == 1.5
    a, b, c = anchors
    for i, j in [(2, 2), (2, 6), (6, 2), (0, 8), (5, 5)]:
        point = a + u[j] * (b - a) + v[i] * (c - a)  # row i is v, column j is u
        distances = [((point - anchor) ** 2).sum() for anchor in anchors]
        assert labels[i, j] == int(np.argmin(distances)), (i, j)
    assert labels[2, 2] == 0 and labels[2, 6] == 1 and labels[6, 2] == 2  # at a, b and c


def test_the_sweep_tables_the_test_accuracy_of_every_run(tmp_path):
    from shared.testing import run_script

    args = ("--lrs", "0.001", "0.01", "--batch-sizes", "64", "--optimizers", "adam", "sgd")
    run_script(PROJECT, "sweep.py", *args, "--epochs", "1", "--max-train", "128", "--out", tmp_path)
    results = json.loads((tmp_path / "sweep.json").read_text())
    assert len(results) == 4
    for r in results:
        run = tmp_path / f"{r['optimizer']}-lr{r['lr']:g}-batch{r['batch_size']}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert r["test_accuracy"] == metrics["value"]
        assert json.loads((run / "config.json").read_text())["lr"] == r["lr"]
    table = (tmp_path / "sweep.md").read_text().splitlines()
    assert table[0] == "| optimizer | lr | batch 64 |"
    sgd_001 = next(r for r in results if r["optimizer"] == "sgd" and r["lr"] == 0.01)
    assert f"| sgd | 0.01 | {sgd_001['test_accuracy']:.4f} |" in table
    assert (tmp_path / "sweep.png").stat().st_size > 0
