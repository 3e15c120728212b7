"""torchrun: two gloo processes on the CPU, each with half of every global batch, train as one
process with the whole batch; and the normalisation of the losses that makes this so."""

from pathlib import Path

import pytest
import torch
from data import make_scenes
from model import DetectorConfig, build_detector
from train import check_batches_split

from shared.errors import UserError
from shared.logging import read_log
from shared.runtime import Distributed
from shared.testing import assert_tensors_close, run_script, run_torchrun

PROJECT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """two_processes(detector): the folder of the same dry run under torchrun with 2 processes
    (global batch 8: 4 scenes each), made on first use."""
    folders = {}

    def folder(detector: str) -> Path:
        if detector not in folders:
            out = tmp_path_factory.mktemp(f"{detector}-ddp")
            run_torchrun(PROJECT, "train.py", "--dry-run", "--detector", detector, "--out", out)
            folders[detector] = out
        return folders[detector]

    return folder


@pytest.mark.parametrize("detector", ["two-stage", "yolo"])
def test_two_processes_end_with_the_weights_and_buffers_of_one(dry_run, two_processes, detector):
    one, two = dry_run(detector), two_processes(detector)
    # 6 steps; the state dicts hold batch norm's running statistics (pooled over both processes)
    model_one = torch.load(one / "model.pt", weights_only=True)["model"]
    model_two = torch.load(two / "model.pt", weights_only=True)["model"]
    assert any("running_var" in name for name in model_one)
    assert_tensors_close(model_two, model_one, atol=1e-5, rtol=1e-4)
    losses = [[r["loss"] for r in read_log(folder) if "loss" in r] for folder in (one, two)]
    assert len(losses[0]) == 6 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    # Rank 1 wrote nothing: the same files (but inference.png, which test_cli's inference tests
    # draw beside the one-process checkpoint), and as many log lines.
    trained_files = {p.name for p in one.iterdir()} - {"inference.png"}
    assert sorted(p.name for p in two.iterdir()) == sorted(trained_files)
    assert len(read_log(two)) == len(read_log(one))


def test_resume_under_torchrun_is_exact_and_needs_the_same_process_count(two_processes, tmp_path):
    # Killed right after step 3 is logged (checkpoints at steps 2, 4, 6), then resumed.
    flags = ("--dry-run", "--out", tmp_path)
    run_torchrun(PROJECT, "train.py", *flags, env={"DLFS_KILL_AT": "3"}, expect_code=1)
    run_torchrun(PROJECT, "train.py", *flags, "--resume")
    resumed = torch.load(tmp_path / "model.pt", weights_only=True)
    never_stopped = torch.load(two_processes("two-stage") / "model.pt", weights_only=True)
    for part in ("model", "optimizer", "batch_rng"):
        assert_tensors_close(resumed[part], never_stopped[part], atol=0, rtol=0, where=part)
    result = run_script(PROJECT, "train.py", *flags, "--resume", expect_code=2)
    assert "written by 2 processes, not 1" in result.stderr


def test_every_global_batch_must_split_over_the_processes():
    two = Distributed(True, rank=0, local_rank=0, world_size=2, device=torch.device("cpu"))
    check_batches_split(18, 8, two)  # batches of 8, 8 and 2
    with pytest.raises(UserError, match="a global batch of 1 scenes .* over 2 processes"):
        check_batches_split(17, 8, two)  # the last batch has 1
    with pytest.raises(UserError, match="a global batch of 7 scenes"):
        check_batches_split(14, 7, two)


def seeded(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def gradients(model, images, targets, seeds, mean_count):
    model.zero_grad()
    _, losses = model(images, targets, seeded(seeds), mean_count=mean_count)
    sum(losses.values()).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def replay(values):
    """A mean_count that answers each count it is asked for with the next of `values`."""
    answers = iter(values)
    return lambda count: next(answers)


def counts(model, images, targets, seeds):
    """The counts each loss of one forward pass divides by, in the order they are asked for."""
    asked = []
    model(images, targets, seeded(seeds), mean_count=lambda c: asked.append(c) or c)
    return asked


@pytest.mark.parametrize("detector", ["sliding", "two-stage"])
def test_halves_divided_by_the_mean_count_give_the_gradient_of_the_whole_batch(detector):
    """What DDP computes, in one process: each half's gradient with every loss divided by the
    count averaged over the halves, then the mean of the two gradients. Batch norm uses its
    running statistics (eval mode), so each image's features do not depend on the batch."""
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(detector=detector, width=4)).eval()
    scenes = make_scenes(4, "train", seed=3)
    images = torch.from_numpy(scenes.images)
    targets = [
        {"boxes": torch.from_numpy(b), "labels": torch.from_numpy(lb)}
        for b, lb in zip(scenes.boxes, scenes.labels)
    ]
    seeds = [11, 12, 13, 14]  # each image's sampled anchors, regions and windows
    whole = gradients(model, images, targets, seeds, mean_count=lambda c: c)
    halves = [(images[:2], targets[:2], seeds[:2]), (images[2:], targets[2:], seeds[2:])]
    per_half = [counts(model, *half) for half in halves]
    assert per_half[0] != per_half[1]  # the halves hold different numbers of samples
    means = [(a + b) / 2 for a, b in zip(*per_half)]
    shared = [gradients(model, *half, mean_count=replay(means)) for half in halves]
    averaged = {name: (shared[0][name] + shared[1][name]) / 2 for name in whole}
    assert_tensors_close(averaged, whole, atol=1e-6, rtol=1e-4)
    # Each half divided by its own counts instead weighs the samples unequally: not the same.
    own = [gradients(model, *half, mean_count=lambda c: c) for half in halves]
    wrong = {name: (own[0][name] + own[1][name]) / 2 for name in whole}
    with pytest.raises(AssertionError):
        assert_tensors_close(wrong, whole, atol=1e-6, rtol=1e-4)
