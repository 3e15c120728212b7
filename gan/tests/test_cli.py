"""The command line, as a user runs it: dry runs of both scripts, inference on what they wrote,
a folder of pictures, exact resume after a kill, and errors in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.checkpoint import save_arrays
from shared.state import read_state
from shared.testing import run_script

PROJECT = Path(__file__).resolve().parents[1]


def test_gan2d_dry_run_writes_every_output_and_inference_draws_points(tmp_path):
    run_script(PROJECT, "gan2d.py", "--dry-run", "--out", tmp_path)
    for name in ("model.npz", "metrics.json", "samples.png", "training.gif", "losses.png"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metric"] == "high_quality_share" and "modes_covered" in metrics
    out = run_script(PROJECT, "inference.py", "--checkpoint", tmp_path / "model.npz", "--num", 50)
    assert (tmp_path / "generated.png").exists()
    assert "50 generated points" in out.stdout


def test_image_dry_run_then_class_samples_and_latent_walks(tmp_path):
    run_script(
        PROJECT, "train.py", "--model", "wgan-gp", "--spectral-norm", "--conditional",
        "--dry-run", "--threads", "1", "--out", tmp_path,
    )  # fmt: skip
    for name in ("model.pt", "metrics.json", "samples.png", "training.gif", "losses.png"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "samples_by_class.png").exists()
    assert (tmp_path / "samples" / "epoch_004.png").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metric"] == "frechet" and "frechet_floor" in metrics and "accuracy" in metrics
    assert metrics["generator_steps"] == 8  # 4 epochs of 2 steps
    checkpoint = tmp_path / "model.pt"
    out = run_script(
        PROJECT, "inference.py", "--checkpoint", checkpoint, "--class", 7, "--num", 9,
        "--threads", 1,
    )  # fmt: skip
    assert "of class 7" in out.stdout
    grid = tmp_path / "walk.png"
    run_script(PROJECT, "inference.py", "--checkpoint", checkpoint, "--interpolate", "--out", grid)
    assert grid.exists()


def test_samples_by_class_puts_each_sample_in_the_row_of_its_class(tmp_path):
    import report

    classes = [2, 0, 2, 1, 2, 0, 2]  # class 2 has one sample too many, class 3 none
    samples = np.arange(7, dtype=np.float32)[:, None, None, None] / 10 * np.ones((1, 1, 4, 4))
    cells = report.plot_by_class(tmp_path / "by_class.png", samples, classes, "0123", 3)
    assert (tmp_path / "by_class.png").exists()
    expected = [[1, 5, -1], [3, -1, -1], [0, 2, 4], [-1, -1, -1]]  # first ones, in order
    assert cells.tolist() == expected
    grid = report.class_grid(samples, cells)
    assert grid.shape == (1 + 4 * 5, 1 + 3 * 5)  # 4x4 tiles, 1 pixel apart
    for row, indices in enumerate(expected):
        for col, i in enumerate(indices):
            tile = grid[1 + 5 * row : 5 + 5 * row, 1 + 5 * col : 5 + 5 * col]
            assert np.allclose(tile, 1.0 if i < 0 else i / 10), (row, col)  # blank: white


def write_pictures(folder: Path) -> None:
    """Six pictures of different sizes and modes, two in a sub-folder."""
    rng = np.random.default_rng(0)
    (folder / "more").mkdir(parents=True)
    for i, (w, h) in enumerate([(12, 12), (20, 10), (9, 15), (16, 16), (30, 30), (7, 7)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert("L" if i % 2 else "RGB")
        image.save(folder / ("more" if i >= 4 else ".") / f"picture_{i}.png")


def test_centre_square_of_a_picture_is_what_a_folder_loads(tmp_path):
    from shared.data import load_image_folder as load_folder

    pixels = np.zeros((2, 6, 3), dtype=np.uint8)  # 2 high, 6 wide: black sides
    pixels[:, 2:4] = (255, 0, 0)  # the centred 2x2 square is red
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    colour = load_folder(tmp_path, size=4, channels=3)
    assert colour.shape == (1, 3, 4, 4)
    assert np.allclose(colour[0, 0], 1.0) and np.allclose(colour[0, 1:], 0.0)
    grey = load_folder(tmp_path, size=4, channels=1)  # ITU-R 601 luma of pure red: 76/255
    assert grey.shape == (1, 1, 4, 4) and np.allclose(grey, 76 / 255)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_folder_of_pictures_trains_in_grey_or_colour(tmp_path, channels):
    folder = tmp_path / "pictures"
    write_pictures(folder)
    out = tmp_path / "run"
    run_script(
        PROJECT, "train.py", "--dataset", "folder", "--image-dir", folder, "--channels", channels,
        "--image-size", 8, "--dry-run", "--threads", 1, "--out", out,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metric"] == "frechet_thumbnails" and metrics["value"] > 0
    config = read_state(out / "model.pt")["config"]
    assert (config["channels"], config["image_size"]) == (channels, 8)
    run_script(PROJECT, "inference.py", "--checkpoint", out / "model.pt", "--num", 4)
    with Image.open(out / "generated.png") as image:
        assert (image.mode == "RGB") == (channels == 3) or image.mode == "RGBA"


def run_killed(script: str, out: Path, flags: tuple, kill_at: int | None, *extra: str):
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1")
    env.pop("DLFS_KILL_AT", None)
    if kill_at is not None:
        env["DLFS_KILL_AT"] = str(kill_at)
    return subprocess.run(
        [sys.executable, script, *flags, "--out", str(out), *extra],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def log_numbers(folder: Path) -> list[dict]:
    lines = (folder / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in lines]


def flat_arrays(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in ("train_config", "path"):
                yield from flat_arrays(item, f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from flat_arrays(item, f"{prefix}/{i}")
    else:
        yield prefix, np.asarray(value)


@pytest.mark.parametrize(
    "script, flags, kill_at, checkpoint",
    [  # killed after logging a step between the first two checkpoints
        ("gan2d.py", ("--dry-run",), 15, "model.npz"),  # checkpoints at steps 10 and 20
        ("train.py", ("--dry-run", "--threads", "1"), 6, "model.pt"),  # DCGAN: at 4 and 8
    ],
)
def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(
    tmp_path, script, flags, kill_at, checkpoint
):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_killed(script, straight, flags, None).returncode == 0
    assert run_killed(script, killed, flags, kill_at).returncode == -9
    resumed = run_killed(script, killed, flags, None, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert log_numbers(killed) == log_numbers(straight)
    ours = dict(flat_arrays(read_state(killed / checkpoint)))
    theirs = dict(flat_arrays(read_state(straight / checkpoint)))
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert np.array_equal(ours[name], value), name


def test_resuming_with_other_flags_names_the_flag(tmp_path):
    run_script(PROJECT, "gan2d.py", "--dry-run", "--out", tmp_path)
    result = run_script(
        PROJECT, "gan2d.py", "--dry-run", "--pack", 1, "--resume", "--out", tmp_path,
        expect_code=2,
    )  # fmt: skip
    assert "--pack 2, not 1" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "script, flags, named",
    [
        ("gan2d.py", ("--hidden", 10_000_000), "--hidden 10000000"),
        ("train.py", ("--width", 100_000), "--width 100000"),
        ("train.py", ("--image-size", 40_000), "--image-size 40000"),
    ],
)
def test_sizes_too_large_for_memory_are_one_line_errors(tmp_path, script, flags, named):
    out = tmp_path / "run"
    result = run_script(PROJECT, script, *flags, "--out", out, expect_code=2)
    assert named in result.stderr and "GB" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # stopped before anything was allocated or written


def test_missing_and_corrupt_checkpoints_are_one_line_errors(tmp_path):
    missing = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "none.pt", expect_code=2
    )
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    corrupt = tmp_path / "model.npz"
    corrupt.write_bytes(b"not a checkpoint")
    result = run_script(PROJECT, "inference.py", "--checkpoint", corrupt, expect_code=2)
    assert "corrupt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_impossible_flags_are_one_line_errors(tmp_path):
    result = run_script(PROJECT, "train.py", "--dataset", "folder", expect_code=2)
    assert "--image-dir" in result.stderr
    result = run_script(PROJECT, "train.py", "--channels", "3", expect_code=2)
    assert "applies to --dataset folder" in result.stderr
    result = run_script(PROJECT, "train.py", "--loss", "l1", expect_code=2)
    assert "--loss must be one of" in result.stderr
    result = run_script(PROJECT, "gan2d.py", "--batch-size", 255, expect_code=2)
    assert "multiple of --pack 2" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script(
        PROJECT, "train.py", "--dataset", "folder", "--image-dir", empty, "--dry-run",
        expect_code=2,
    )  # fmt: skip
    assert "no images" in result.stderr
    from shared.state import write_state

    mismatched = {"model": {"G.0": np.zeros((8, 2))}, "config": {}, "train_config": {}}
    write_state(tmp_path / "model.npz", mismatched)
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "model.npz", expect_code=2
    )
    assert "does not fit the model" in result.stderr
    save_arrays(tmp_path / "old.npz", {"W": np.zeros(2)}, {"kind": "numpy-gan2d"})
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "old.npz", expect_code=2
    )
    assert "not written by this project" in result.stderr
