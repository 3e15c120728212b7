"""torchrun: two gloo processes, each with half of every global batch, train as one process."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.logging import read_log
from shared.state import read_state
from shared.testing import assert_tensors_close, run_script, run_torchrun

PROJECT = Path(__file__).resolve().parents[1]
# Two autoencoder steps and four diffusion steps on global batches of 8 (4 per process), then a
# one-sample-per-prompt evaluation. Widths of 16 give every GroupNorm group two channels (at 8
# a conv bias before a one-channel group gets no gradient at all). Learning rates of 1e-4:
# Adam divides by the root of the second moment, so a parameter whose gradient is only float
# rounding (the attention key biases, which softmax ignores) moves by a few hundredths of the
# learning rate whichever order the gradients were summed in; at 1e-4 that stays below 1e-5.
FLAGS = (
    "--ae-steps", "2", "--unet-steps", "4", "--batch-size", "8", "--checkpoint-every", "2",
    "--ae-channels", "16", "--unet-channels", "16", "--ae-lr", "1e-4", "--lr", "1e-4",
    "--samples-per-prompt", "1", "--sample-steps", "2",
)  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run in one process and in two: (folder, stdout) of each."""
    root = tmp_path_factory.mktemp("distributed")
    with ThreadPoolExecutor(2) as pool:  # side by side: one process alone leaves a core idle
        one = pool.submit(run_script, PROJECT, "train.py", *FLAGS, "--out", root / "one")
        two = pool.submit(run_torchrun, PROJECT, "train.py", *FLAGS, "--out", root / "two")
        return (root / "one", one.result().stdout), (root / "two", two.result().stdout)


def test_two_processes_with_half_batches_reach_the_weights_of_one_with_the_whole(runs):
    (one, _), (two, _) = runs
    single, double = read_state(one / "model.pt"), read_state(two / "model.pt")
    assert single["step"] == double["step"] == 6
    # All three networks (the autoencoder's from stage 1, the others' from stage 2) and the
    # latent scale measured between the stages.
    assert_tensors_close(single["model"], double["model"], atol=1e-5, where="model")
    assert len(double["rng_ranks"]) == 2  # each process's generators, for a resume
    losses = [[r.get("loss", r.get("reconstruction")) for r in read_log(run)] for run in (one, two)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the global batch's mean loss


def test_only_rank_0_writes_and_evaluates(runs):
    (one, one_out), (two, two_out) = runs
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert len(read_log(two)) == len(read_log(one)) == 6
    assert two_out.count("guidance 3: prompt accuracy") == 1
