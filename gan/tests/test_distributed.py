"""torchrun: two gloo processes on the CPU, splitting a global batch of 16, train exactly as one
process with the batch of 16 (both networks' parameters and buffers, both optimisers, the
logged losses); every rank ends with the same state; rank 1 writes nothing. Also --precision
bf16 on the CPU."""

import json
import math
from pathlib import Path

import torch
import train

from shared.cli import parse_config
from shared.state import read_state
from shared.testing import assert_tensors_close, run_torchrun

PROJECT = Path(__file__).resolve().parents[1]
# The dry run: 4 epochs of 2 generator steps, global batch 16, checkpoints after steps 4 and 8.
DRY_RUN = ("--dry-run", "--threads", "1")
# A conditional WGAN-GP critic with spectral norm: the penalty's mixes and the labels are
# sharded too. 2 generator steps (10 critic steps), global batch 16, a checkpoint after each:
# Adam without momentum (WGAN-GP's beta1 = 0) magnifies the rounding differences of weights
# whose gradients are nearly zero, so the two runs part by more than 1e-5 after a few more.
SPECTRAL_NORM = (
    "--model", "wgan-gp", "--spectral-norm", "--conditional", "--epochs", 2,
    "--steps-per-epoch", 1, "--batch-size", 16, "--width", 8, "--num-eval", 64,
    "--save-every", 1, "--log-every", 1, "--threads", 1,
)  # fmt: skip


def one_process(out: Path, *flags) -> None:
    """train.py in this process: the reference the two processes must match."""
    train.main(parse_config(train.TrainConfig, [*map(str, flags), "--out", str(out)]))


def training_state(folder: Path) -> dict:
    ckpt = read_state(folder / "model.pt")
    return {name: ckpt[name] for name in ("model", "opt_G", "opt_D", "step")}


def log_lines(folder: Path) -> list[dict]:
    lines = (folder / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in lines]


def files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def assert_same_run(single: Path, ddp: Path, steps: int) -> None:
    """The same weights, buffers, optimiser moments and losses; the same files, written once."""
    assert_tensors_close(training_state(ddp), training_state(single), atol=1e-5, rtol=1e-4)
    ours, theirs = log_lines(ddp), log_lines(single)
    assert len(ours) == len(theirs) == steps  # one line per step: rank 1 logged nothing
    for mine, reference in zip(ours, theirs):
        assert mine.keys() == reference.keys()
        assert all(math.isclose(mine[k], reference[k], rel_tol=1e-5) for k in mine), mine
    assert files(ddp) == files(single)
    assert json.loads((ddp / "metrics.json").read_text())["processes"] == 2


def test_two_processes_train_a_dcgan_exactly_as_one_with_the_whole_batch(tmp_path):
    # batch norm in both networks: its statistics are pooled over the ranks
    one_process(tmp_path / "single", *DRY_RUN)
    run_torchrun(PROJECT, "train.py", *DRY_RUN, "--out", tmp_path / "ddp", timeout=120)
    assert_same_run(tmp_path / "single", tmp_path / "ddp", steps=8)


def test_two_processes_train_spectral_norm_as_one_and_every_rank_ends_the_same(tmp_path):
    one_process(tmp_path / "single", *SPECTRAL_NORM)
    dump = tmp_path / "ranks"
    dump.mkdir()
    flags = (*SPECTRAL_NORM, "--out", tmp_path / "ddp")
    run_torchrun(PROJECT, "tests/every_rank.py", dump, *flags, timeout=120)
    assert_same_run(tmp_path / "single", tmp_path / "ddp", steps=2)
    rank0, rank1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert_tensors_close(rank1, rank0, atol=0, rtol=0)  # bit for bit, u and v included
    assert "discriminator.features.0.u" in rank1["model"]


def test_bf16_autocast_on_the_cpu_trains_with_float32_weights_and_finite_losses(tmp_path):
    one_process(tmp_path, *SPECTRAL_NORM, "--precision", "bf16")
    state = read_state(tmp_path / "model.pt")["model"]
    assert all(t.dtype in (torch.float32, torch.int64) for t in state.values())
    assert all(math.isfinite(v) for line in log_lines(tmp_path) for v in line.values())
    u = state["discriminator.features.0.u"]
    assert torch.allclose(u.norm(), torch.tensor(1.0), atol=1e-6)


def test_a_global_batch_that_does_not_split_stops_before_anything_is_written(tmp_path):
    result = run_torchrun(
        PROJECT,
        "train.py",
        "--batch-size",
        15,
        "--threads",
        1,
        "--out",
        tmp_path / "run",
        expect_code=1,
        timeout=120,
    )  # fmt: skip  (torchrun exits 1 when a process exits 2)
    assert "error: a batch of 15 does not split over 2 processes" in result.stderr
    assert not (tmp_path / "run").exists()
