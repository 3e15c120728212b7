import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.checkpoint import load_checkpoint
from shared.logging import read_log
from shared.testing import run_script

PROJECT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_script(PROJECT, "train.py", "--dry-run", "--out", out)
    return out


def test_dry_run_writes_checkpoint_metrics_and_figures(trained):
    for name in (
        "model.pt",
        "metrics.json",
        "config.json",
        "log.jsonl",
        "loss.png",
        "pr_curves.png",
        "detections.png",
    ):
        assert (trained / name).exists(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["metric"] == "map50" and 0 <= metrics["value"] <= 1
    for key in ("task", "higher_is_better", "wall_time_s", "coco_map", "images_per_s"):
        assert key in metrics


@pytest.mark.parametrize("detector", ["sliding", "yolo"])
def test_other_detectors_dry_run(tmp_path, detector):
    run_script(PROJECT, "train.py", "--dry-run", "--detector", detector, "--out", tmp_path)
    assert (tmp_path / "metrics.json").exists()


def test_inference_draws_boxes_on_a_generated_scene_and_on_an_image(trained, tmp_path):
    run_script(
        PROJECT, "inference.py", "--checkpoint", trained / "model.pt", "--score-threshold", "0"
    )
    assert (trained / "inference.png").exists()
    Image.fromarray(np.zeros((48, 80), np.uint8)).save(tmp_path / "blank.png")
    result = run_script(
        PROJECT,
        "inference.py",
        tmp_path / "blank.png",
        "--checkpoint",
        trained / "model.pt",
        "--out",
        tmp_path / "boxes.png",
    )
    assert (tmp_path / "boxes.png").exists() and "boxes drawn" in result.stdout


def test_resume_continues_from_the_saved_epoch(trained):
    logged = read_log(trained)
    run_script(PROJECT, "train.py", "--dry-run", "--out", trained, "--resume")
    assert read_log(trained) == logged  # the one epoch was done: no step is trained again
    state = load_checkpoint(trained / "model.pt")
    assert state["epoch"] == 0 and len(state["history"]["step"]) == 2  # 16 scenes, batches of 8
    assert json.loads((trained / "metrics.json").read_text())["metric"] == "map50"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "missing.pt"], "does not exist"),
        (["not-there.png", "--checkpoint", "{ckpt}"], "does not exist"),
        (["{text}", "--checkpoint", "{ckpt}"], "is not an image"),
        (["{empty}", "--checkpoint", "{ckpt}"], "is not an image"),
        (["--checkpoint", "{text}"], "truncated or corrupt"),
    ],
)
def test_bad_inputs_get_one_line_errors(trained, tmp_path, args, message):
    (tmp_path / "notes.png").write_text("plain text")
    (tmp_path / "empty.png").write_bytes(b"")
    names = {
        "ckpt": trained / "model.pt",
        "text": tmp_path / "notes.png",
        "empty": tmp_path / "empty.png",
    }
    args = [a.format(**names) for a in args]
    result = run_script(PROJECT, "inference.py", *args, expect_code=2)
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_impossible_flags_are_rejected():
    result = run_script(PROJECT, "train.py", "--canvas", "60", expect_code=2)
    assert "multiple of 8" in result.stderr
    result = run_script(PROJECT, "train.py", "--dataset", "voc", expect_code=2)
    assert "needs --annotations" in result.stderr


@pytest.mark.parametrize("annotations", ["missing.json", "."])
def test_a_missing_coco_file_is_a_one_line_error(annotations):
    result = run_script(
        PROJECT, "train.py", "--dataset", "coco", "--annotations", annotations, expect_code=2
    )
    assert "is not a COCO .json file" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("detector", ["sliding", "two-stage", "yolo"])
def test_dry_run_and_inference_on_cuda(tmp_path, detector):
    cuda = ("--device", "cuda")
    run_script(PROJECT, "train.py", "--dry-run", "--detector", detector, *cuda, "--out", tmp_path)
    ckpt = tmp_path / "model.pt"
    run_script(PROJECT, "inference.py", "--checkpoint", ckpt, *cuda, "--score-threshold", "0")
    assert (tmp_path / "inference.png").exists()
