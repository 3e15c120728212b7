"""train.py and inference.py as a user runs them: a dry run, sampling from it, and bad input."""

import json
from pathlib import Path

import pytest
import torch
from train import TrainConfig

from shared.cli import parse_config
from shared.data import IMAGE_DATASETS
from shared.logging import read_log
from shared.state import read_state
from shared.testing import assert_tensors_close, run_script, run_torchrun

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_script(PROJECT, "train.py", "--dry-run", "--out", out)
    return out


def test_dry_run_writes_checkpoint_metrics_and_figures(dry_run):
    metrics = json.loads((dry_run / "metrics.json").read_text())
    assert metrics["metric"] == "confidence"
    # A four-step model draws noise: the judge must find it far from real digits, and unsure.
    assert metrics["frechet"] > 5 * metrics["frechet_floor"] > 0
    assert metrics["value"] < 0.9 and metrics["accuracy"] < 0.5
    for name in ("model.pt", "samples.png", "class_samples.png", "forward_process.png",
                 "reverse_process.png", "reverse_process.gif", "loss.png"):  # fmt: skip
        assert (dry_run / name).stat().st_size > 0, name


def test_inference_writes_a_class_grid_and_a_gif(dry_run, tmp_path):
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", dry_run / "model.pt", "--num", "4",
        "--sampler", "ddim", "--steps", "3", "--class", "3", "--guidance", "2",
        "--out", tmp_path / "grid.png", "--gif", tmp_path / "reverse.gif",
    )  # fmt: skip
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert (tmp_path / "reverse.gif").stat().st_size > 0
    assert "4 samples (ddim, 3 steps)" in result.stdout


def test_a_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_run(
    dry_run, tmp_path, monkeypatch
):
    # Killed right after logging step 3 (the checkpoint holds step 2), then resumed: the
    # losses of steps 3 and 4 and the final weights, EMA and Adam state must be bit for bit
    # those of the run that never stopped (the fixture), which needs the batch and noise
    # generator restored, not re-seeded.
    monkeypatch.setenv("DLFS_KILL_AT", "3")
    run_script(PROJECT, "train.py", "--dry-run", "--out", tmp_path, expect_code=-9)
    monkeypatch.delenv("DLFS_KILL_AT")
    run_script(PROJECT, "train.py", "--dry-run", "--out", tmp_path, "--resume")

    assert losses(tmp_path) == losses(dry_run) and len(losses(dry_run)) == 4
    resumed, straight = read_state(tmp_path / "model.pt"), read_state(dry_run / "model.pt")
    for part in ("model", "ema"):
        for name, value in straight[part].items():
            assert torch.equal(resumed[part][name], value), (part, name)
    first = next(iter(straight["optimizer"]["state"].values()))
    assert torch.equal(next(iter(resumed["optimizer"]["state"].values()))["exp_avg"],
                       first["exp_avg"])  # fmt: skip


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The dry run (global batch 16) under torchrun: two gloo processes of 8 images each."""
    out = tmp_path_factory.mktemp("ddp")
    run_torchrun(PROJECT, "train.py", "--dry-run", "--out", out, timeout=300)
    return out


def losses(folder):
    return [(r["step"], r["loss"]) for r in read_log(folder) if "loss" in r]


def test_two_processes_with_the_global_batch_train_the_weights_of_one_process(dry_run, ddp_run):
    # Same batches, dropped labels, t and noise, split in two; DDP averages the two halves'
    # gradients, which is the gradient of the whole batch's mean. Adam divides by sqrt(v), so
    # where a gradient is nearly zero its rounding moves the update by a visible fraction of
    # the learning rate: measured, the weights differ by at most 3.5e-5 (median 4e-9), and so
    # does their average, four steps into its warm-up.
    one, two = read_state(dry_run / "model.pt"), read_state(ddp_run / "model.pt")
    assert_tensors_close(two["model"], one["model"], atol=1e-4, rtol=1e-4)
    assert_tensors_close(two["ema"], one["ema"], atol=1e-4, rtol=1e-4)
    assert [s for s, _ in losses(ddp_run)] == [1, 2, 3, 4]
    assert [x for _, x in losses(ddp_run)] == pytest.approx(
        [x for _, x in losses(dry_run)], rel=1e-6
    )
    # Rank 1 wrote nothing: the same files, one log line per step, one copy of the metrics.
    assert sorted(p.name for p in ddp_run.iterdir()) == sorted(p.name for p in dry_run.iterdir())
    assert len(read_log(ddp_run)) == len(read_log(dry_run))
    assert json.loads((ddp_run / "metrics.json").read_text())["value"] == pytest.approx(
        json.loads((dry_run / "metrics.json").read_text())["value"], abs=0.02
    )


def test_a_torchrun_run_killed_after_a_checkpoint_resumes_under_torchrun(ddp_run, tmp_path):
    # Rank 0 is killed right after logging step 3 (torchrun then stops rank 1); resumed with
    # two processes from the step-2 checkpoint, it ends bit for bit where ddp_run ended.
    run_torchrun(PROJECT, "train.py", "--dry-run", "--out", tmp_path, expect_code=1,
                 env={"DLFS_KILL_AT": "3"}, timeout=300)  # fmt: skip
    run_torchrun(PROJECT, "train.py", "--dry-run", "--out", tmp_path, "--resume", timeout=300)
    assert losses(tmp_path) == losses(ddp_run)
    resumed, straight = read_state(tmp_path / "model.pt"), read_state(ddp_run / "model.pt")
    assert_tensors_close(resumed["model"], straight["model"], atol=0, rtol=0)
    assert_tensors_close(resumed["ema"], straight["ema"], atol=0, rtol=0)


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
    result = run_torchrun(
        PROJECT, "train.py", "--batch-size", "15", "--out", tmp_path / "run", expect_code=1
    )  # each process exits with status 2, and torchrun with 1
    assert "error: a batch of 15 does not split over 2 processes" in result.stderr
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_bf16_autocast_on_the_cpu_trains_close_to_float32(dry_run, tmp_path):
    run_script(PROJECT, "train.py", "--dry-run", "--precision", "bf16", "--out", tmp_path)
    fp32, bf16 = ([x for _, x in losses(folder)] for folder in (dry_run, tmp_path))
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=1e-2)  # measured: within 5e-4


def test_resuming_with_another_schedule_names_the_flag(dry_run):
    result = run_script(
        PROJECT, "train.py", "--dry-run", "--out", dry_run, "--resume", "--schedule", "cosine",
        expect_code=2,
    )  # fmt: skip
    assert "--schedule linear, not cosine" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "flags", [("--base-channels", "100000"), ("--image-size", "40000", "--eval-samples", "10")]
)
def test_a_model_too_large_for_memory_is_refused_before_allocating(flags, tmp_path):
    result = run_script(PROJECT, "train.py", *flags, "--out", tmp_path / "run", expect_code=2)
    assert " ".join(flags[:2]) in result.stderr and "GB free" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_presets_train_at_native_size_and_judge_1000_guided_ddim_50_samples(name):
    cfg = parse_config(TrainConfig, ["--preset", name])
    cfg.check()
    assert cfg.dataset == name and cfg.image_size == IMAGE_DATASETS[name].size == 28
    assert cfg.conditional and cfg.guidance > 1 and cfg.p_uncond > 0
    assert (cfg.sampler, cfg.sample_steps, cfg.eval_samples) == ("ddim", 50, 1000)
    assert parse_config(TrainConfig, ["--preset", name, "--steps", "7"]).steps == 7


def test_inference_on_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "none.pt", expect_code=2
    )
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_inference_on_a_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_script(PROJECT, "inference.py", "--checkpoint", bad, expect_code=2)
    assert "corrupt" in result.stderr and "Traceback" not in result.stderr


def test_a_class_the_model_does_not_know_is_a_one_line_error(dry_run):
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", dry_run / "model.pt", "--class", "10",
        expect_code=2,
    )  # fmt: skip
    assert "--class 10 out of range" in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--sample-steps", "50", "--timesteps", "40"), "--sample-steps 50 > --timesteps 40"),
        (("--eval-samples", "5"), "--eval-samples must be >= 10"),  # fewer than one per class
        (("--eta", "1.5"), "--eta must be <= 1"),  # sigma^2 > 1 - alpha_bar_prev: NaN samples
        (("--lr", "0"), "--lr must be > 0"),
    ],
)
def test_impossible_training_flags_are_one_line_errors(flags, message):
    result = run_script(PROJECT, "train.py", *flags, expect_code=2)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_eta_above_one_in_inference_is_a_one_line_error():
    result = run_script(PROJECT, "inference.py", "--eta", "1.5", expect_code=2)
    assert "--eta must be <= 1" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dry_run_and_inference_on_cuda(tmp_path):
    run_script(PROJECT, "train.py", "--dry-run", "--device", "cuda", "--out", tmp_path)
    result = run_script(
        PROJECT, "inference.py", "--checkpoint", tmp_path / "model.pt", "--device", "cuda",
        "--num", "4", "--steps", "3", "--class", "3", "--guidance", "2", "--eta", "1",
        "--out", tmp_path / "grid.png", "--gif", tmp_path / "reverse.gif",
    )  # fmt: skip
    assert "4 samples (ddim, 3 steps)" in result.stdout
    assert (tmp_path / "grid.png").stat().st_size > 0
