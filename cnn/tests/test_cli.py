"""train.py and inference.py as a user runs them: dry runs, resumes, PNG inputs, bad inputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.logging import read_log
from shared.state import read_state
from shared.testing import run_script

PROJECT = Path(__file__).resolve().parents[1]
FIGURES = (
    "loss.png",
    "accuracy.png",
    "confusion_matrix.png",
    "filters.png",
    "feature_maps.png",
    "decision_regions.png",
)


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("numpy_run")
    run_script(PROJECT, "train.py", "--dry-run", "--out", out)
    return out


def test_numpy_dry_run_writes_checkpoint_metrics_and_every_figure(numpy_run):
    metrics = json.loads((numpy_run / "metrics.json").read_text())
    assert metrics["metric"] == "test_accuracy"
    assert metrics["value"] == read_log(numpy_run)[-1]["test_accuracy"]
    assert (numpy_run / "model.npz").stat().st_size > 0
    for name in FIGURES:
        assert (numpy_run / name).stat().st_size > 0, name


def test_a_short_run_learns_the_digits(tmp_path):
    run_script(PROJECT, "train.py", "--epochs", "3", "--max-train", "500", "--out", tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["value"] > 0.8  # chance is 0.1; a broken backward stays near it


@pytest.mark.parametrize(
    "flags, named",
    [
        (("--image-size", "40000"), "--image-size 40000 --channels 16 32 --batch-size 32 needs"),
        (("--channels", "100000", "100000"), "--image-size 16 --channels 100000 100000"),
        (("--model", "resnet18", "--width", "100000"), "--image-size 32 --width 100000 --batch"),
    ],
)
def test_sizes_too_large_for_memory_stop_before_allocating(tmp_path, flags, named):
    result = run_script(PROJECT, "train.py", *flags, "--out", tmp_path / "run", expect_code=2)
    assert result.stderr.startswith(f"error: {named}")
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_inference_classifies_pngs_written_by_its_own_helper(numpy_run, tmp_path):
    run_script(PROJECT, "inference.py", "--write-examples", tmp_path)
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 10
    ckpt = numpy_run / "model.npz"
    result = run_script(PROJECT, "inference.py", *pngs[:3], "--checkpoint", ckpt, "--top-k", "2")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    probs = [float(part.split()[-1]) for part in lines[0].split(": ", 1)[1].split(", ")]
    assert len(probs) == 2 and probs[0] >= probs[1] and 0 < sum(probs) <= 1 + 1e-6


def _train(out, *flags, kill_at=None, resume=False):
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1")
    env.pop("DLFS_KILL_AT", None)
    if kill_at is not None:
        env["DLFS_KILL_AT"] = str(kill_at)
    args = [sys.executable, "train.py", *flags, "--out", str(out)] + ["--resume"] * resume
    return subprocess.run(args, cwd=PROJECT, env=env, capture_output=True, text=True)


def test_a_killed_pytorch_run_resumes_to_the_same_log_and_weights(tmp_path):
    """The shared resume test covers the NumPy CNN; this is the same check for LeNet-5 (its
    weights, Adam's moments, the augmentation generator), killed mid-epoch at step 3."""
    flags = ("--dry-run", "--model", "lenet5", "--no-figures")
    assert _train(tmp_path / "straight", *flags).returncode == 0
    assert _train(tmp_path / "killed", *flags, kill_at=3).returncode == -9
    resumed = _train(tmp_path / "killed", *flags, resume=True)
    assert resumed.returncode == 0, resumed.stderr

    def numbers(run):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in read_log(run)]

    assert numbers(tmp_path / "killed") == numbers(tmp_path / "straight")
    ours = read_state(tmp_path / "killed" / "model.pt")
    theirs = read_state(tmp_path / "straight" / "model.pt")
    for name, tensor in theirs["model"].items():
        assert (ours["model"][name] == tensor).all(), name
    assert (ours["generator"]["numpy_generator"]) == theirs["generator"]["numpy_generator"]


def test_resuming_with_another_batch_size_names_the_flag(numpy_run):
    result = run_script(
        PROJECT,
        "train.py",
        "--dry-run",
        "--batch-size",
        "8",
        "--out",
        numpy_run,
        "--resume",
        expect_code=2,
    )
    assert result.stderr == (
        f"error: checkpoint {numpy_run / 'model.npz'} was trained with --batch-size 32, not 8; "
        "resume with the flags it was trained with\n"
    )


def test_pytorch_dry_run_then_inference_on_a_test_index(tmp_path):
    run_script(PROJECT, "train.py", "--dry-run", "--model", "lenet5", "--out", tmp_path)
    assert (tmp_path / "model.pt").exists() and (tmp_path / "misclassified.png").exists()
    ckpt = tmp_path / "model.pt"
    args = ("--checkpoint", ckpt, "--index", "2", "--threads", "2")
    result = run_script(PROJECT, "inference.py", *args)
    assert result.stdout.startswith("test image 2 (true: ")


def test_training_on_a_folder_of_images_finds_its_classes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, level in (("dark", 40), ("light", 210)):
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(5):
            pixels = np.clip(rng.normal(level, 20, (12, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pics" / name / f"{i}.png")
    out = tmp_path / "run"
    run_script(PROJECT, "train.py", "--dry-run", "--image-dir", tmp_path / "pics", "--out", out)
    result = run_script(PROJECT, "inference.py", "--checkpoint", out / "model.npz")
    assert "(true: dark)" in result.stdout or "(true: light)" in result.stdout
    (tmp_path / "pics" / "dark" / "broken.png").write_bytes(b"not a picture")
    args = ("--dry-run", "--image-dir", tmp_path / "pics", "--out", tmp_path / "run2")
    result = run_script(PROJECT, "train.py", *args, expect_code=2)
    assert "broken.png is not an image" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"not a picture at all", "is not an image")],
)
def test_inference_rejects_files_that_are_not_images_in_one_line(
    numpy_run, tmp_path, content, message
):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    result = run_script(
        PROJECT, "inference.py", bad, "--checkpoint", numpy_run / "model.npz", expect_code=2
    )
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_inference_names_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "missing.pt"
    result = run_script(PROJECT, "inference.py", "--checkpoint", missing, expect_code=2)
    assert (
        result.stderr.strip()
        == f"error: checkpoint {missing} does not exist (train first: python train.py)"
    )


def test_train_rejects_an_image_size_lenet5_cannot_take():
    result = run_script(
        PROJECT, "train.py", "--model", "lenet5", "--image-size", "28", expect_code=2
    )
    assert "--image-size 32" in result.stderr
