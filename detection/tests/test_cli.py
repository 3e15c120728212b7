import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.logging import read_log
from shared.state import read_state
from shared.testing import run_script

PROJECT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def trained(dry_run):
    return dry_run("two-stage")


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
    state = read_state(trained / "model.pt")
    assert state["step"] == 6 and state["classes"] == [str(d) for d in range(10)]
    records = read_log(trained)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]  # every step
    assert [(r["epoch"], r["step"]) for r in records if "val_map50" in r] == [
        (1, 2),
        (2, 4),
        (3, 6),
    ]


@pytest.mark.parametrize("detector", ["sliding", "yolo"])
def test_other_detectors_dry_run(dry_run, detector):
    assert (dry_run(detector) / "metrics.json").exists()


def test_bf16_autocast_on_the_cpu_trains_close_to_float32(trained, tmp_path):
    flags = ("--dry-run", "--threads", "1", "--precision", "bf16", "--out", tmp_path)
    run_script(PROJECT, "train.py", *flags)
    # The first two steps: later the sampled regions follow the proposals, which drift apart.
    fp32, bf16 = (
        [r["loss"] for r in read_log(run) if "loss" in r][:2] for run in (trained, tmp_path)
    )
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.01)


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


def test_resuming_with_another_model_is_a_one_line_error_that_writes_nothing(trained):
    before = {p.name: p.stat().st_mtime_ns for p in trained.iterdir()}
    flags = ("--dry-run", "--out", trained, "--resume", "--roi-op", "pool")
    result = run_script(PROJECT, "train.py", *flags, expect_code=2)
    assert result.stderr == (
        f"error: checkpoint {trained / 'model.pt'} was trained with --roi-op align, not pool; "
        "resume with the flags it was trained with\n"
    )
    assert {p.name: p.stat().st_mtime_ns for p in trained.iterdir()} == before


@pytest.mark.parametrize("flag, value", [("--width", "100000"), ("--canvas", "40000")])
def test_a_size_too_large_for_memory_is_a_one_line_error_naming_the_flag(tmp_path, flag, value):
    result = run_script(PROJECT, "train.py", flag, value, "--out", tmp_path / "run", expect_code=2)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert f"{flag} {value}" in result.stderr and "GB, more than the" in result.stderr
    assert not (tmp_path / "run").exists()


def test_inference_threads_change_the_speed_not_the_detections(trained):
    printed = []
    for threads in ("1", "2"):
        flags = ("--checkpoint", trained / "model.pt", "--score-threshold", "0")
        printed.append(run_script(PROJECT, "inference.py", *flags, "--threads", threads).stdout)
    assert printed[0] == printed[1] and printed[0].count("\n") >= 2


def test_the_presets_build_mnist_scenes_for_both_detectors():
    from train import TrainConfig

    from shared.cli import parse_config

    two_stage = parse_config(TrainConfig, ["--preset", "mnist"])
    yolo = parse_config(TrainConfig, ["--preset", "mnist-yolo", "--epochs", "3"])
    assert (two_stage.dataset, two_stage.detector, yolo.detector) == ("mnist", "two-stage", "yolo")
    assert yolo.epochs == 3 and yolo.train_scenes == two_stage.train_scenes == 4000


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


def test_help_says_the_batch_and_learning_rate_are_for_the_global_batch():
    shown = " ".join(run_script(PROJECT, "train.py", "--help").stdout.split())
    assert "the global batch, split over torchrun processes" in shown
    assert "peak learning rate for the global batch" in shown and "--precision" in shown
