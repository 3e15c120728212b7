"""The command line, as a user runs it: dry runs, inference on what they wrote, resuming, errors."""

import json
from pathlib import Path

import numpy as np

from shared.checkpoint import load_arrays
from shared.testing import run_script

PROJECT = Path(__file__).resolve().parents[1]


def test_numpy_dry_run_writes_every_output_and_inference_draws_points(tmp_path):
    run_script(PROJECT, "train.py", "--dry-run", "--out", tmp_path)
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
    assert (tmp_path / "samples" / "epoch_002.png").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metric"] == "frechet" and "frechet_floor" in metrics and "accuracy" in metrics
    checkpoint = tmp_path / "model.pt"
    out = run_script(PROJECT, "inference.py", "--checkpoint", checkpoint, "--class", 7, "--num", 9)
    assert "of class 7" in out.stdout
    grid = tmp_path / "walk.png"
    run_script(PROJECT, "inference.py", "--checkpoint", checkpoint, "--interpolate", "--out", grid)
    assert grid.exists()


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    common = ("--hidden", 8, "--frames", 2, "--out", tmp_path)
    run_script(PROJECT, "train.py", "--steps", 20, *common)
    out = run_script(PROJECT, "train.py", "--steps", 40, "--resume", *common)
    assert "resumed at step 20" in out.stdout
    _, meta = load_arrays(tmp_path / "model.npz")
    assert meta["step"] == 40


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
    result = run_script(PROJECT, "train.py", "--spectral-norm", "--dry-run", expect_code=2)
    assert "image GANs only" in result.stderr
    result = run_script(PROJECT, "train.py", "--model", "dcgan", "--loss", "l1", expect_code=2)
    assert "--loss must be one of" in result.stderr
    arrays = {"model.G.0": np.zeros((8, 2))}
    from shared.checkpoint import save_arrays

    save_arrays(tmp_path / "model.npz", arrays, {"kind": "numpy-gan2d", "config": {}})
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "model.npz", expect_code=2
    )
    assert "does not fit the model" in result.stderr
