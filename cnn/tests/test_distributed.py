"""torchrun and mixed precision: two gloo processes train exactly as one, bf16 runs on the CPU."""

from pathlib import Path

import pytest

from shared.logging import KILL_AT, read_log
from shared.state import read_state
from shared.testing import assert_tensors_close, run_script, run_torchrun

PROJECT = Path(__file__).resolve().parents[1]
# ResNet-18 (batch norm in every block) at an eighth of the width on 16x16 digits; 21 images
# in global batches of 8 give three steps, the last of 5 images (3 on rank 0, 2 on rank 1).
# SGD, not Adam: Adam divides by the root of tiny second moments and would blow float rounding
# (batch norm's statistics summed in another order) up to the size of the learning rate.
FLAGS = (
    "--model", "resnet18", "--width", "0.125", "--image-size", "16",
    "--max-train", "21", "--max-test", "8", "--epochs", "1", "--batch-size", "8",
    "--optimizer", "sgd", "--lr", "0.05", "--flip", "--log-every", "1", "--no-figures",
)  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run in one process and in two; (folder, stdout) of each."""
    root = tmp_path_factory.mktemp("distributed")
    one = run_script(PROJECT, "train.py", *FLAGS, "--out", root / "one")
    two = run_torchrun(PROJECT, "train.py", *FLAGS, "--out", root / "two", nproc=2)
    return (root / "one", one.stdout), (root / "two", two.stdout)


def test_two_processes_reach_the_weights_and_statistics_of_one_with_the_whole_batch(runs):
    (one, _), (two, _) = runs
    single, double = read_state(one / "model.pt"), read_state(two / "model.pt")
    # Every parameter and every batch-norm running mean, variance and batch count.
    assert_tensors_close(single["model"], double["model"], atol=1e-5, where="model")
    # SGD's momentum buffers sum raw gradients, whose rounding is larger than the weights'.
    momenta = single["optimizer"], double["optimizer"]
    assert_tensors_close(*momenta, atol=1e-4, rtol=1e-3, where="momentum")
    assert len(double["rng_ranks"]) == 2  # each process's generators, for a resume
    losses = [[r["loss"] for r in read_log(run)] for run in (one, two)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the global batch's mean loss


def test_only_rank_0_writes_and_prints(runs):
    (one, one_out), (two, two_out) = runs
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert len(read_log(two)) == len(read_log(one)) == 3
    assert two_out.count("epoch   1") == 1 and two_out.count("test_accuracy =") == 1


def test_a_killed_two_process_run_resumes_under_torchrun_to_the_same_log_and_weights(
    runs, tmp_path
):
    (_, _), (straight, _) = runs
    flags = (*FLAGS, "--checkpoint-every", "1", "--out", tmp_path)
    killed = run_torchrun(PROJECT, "train.py", *flags, env={KILL_AT: "2"}, expect_code=1)
    assert "Signal 9 (SIGKILL)" in killed.stderr  # rank 0, right after logging step 2
    run_torchrun(PROJECT, "train.py", *flags, "--resume")

    def numbers(run):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in read_log(run)]

    assert numbers(tmp_path) == numbers(straight)
    resumed, reference = read_state(tmp_path / "model.pt"), read_state(straight / "model.pt")
    assert_tensors_close(resumed["model"], reference["model"], atol=0, rtol=0)


def test_a_two_process_checkpoint_does_not_resume_in_one_process(runs):
    (_, _), (two, _) = runs
    result = run_script(PROJECT, "train.py", *FLAGS, "--out", two, "--resume", expect_code=2)
    assert result.stderr == (
        f"error: checkpoint {two / 'model.pt'} was written by 2 processes, not 1: "
        "resume it with torchrun --nproc_per_node 2\n"
    )


def test_the_numpy_cnn_refuses_several_processes_in_one_line(tmp_path):
    result = run_torchrun(PROJECT, "train.py", "--dry-run", "--out", tmp_path, expect_code=1)
    message = "error: the NumPy CNN trains in one process, not 2: run it with python train.py"
    # The first process to refuse prints the line and exits; torchrun then stops the other, which
    # may or may not have printed it too, and reports the failure in its own log lines.
    ours = result.stderr.split("torch/distributed/elastic")[0].splitlines()[:-1]
    assert 1 <= len(ours) <= 2 and set(ours) == {message}
    assert not tmp_path.joinpath("log.jsonl").exists()


def test_bf16_autocast_on_the_cpu_stays_close_to_float32(tmp_path):
    flags = ("--dry-run", "--model", "resnet18", "--no-figures")
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        run_script(PROJECT, "train.py", *flags, "--precision", precision, "--out", out)
        losses[precision] = [r["loss"] for r in read_log(out)]
    assert losses["bf16"] != losses["fp32"]  # autocast did run in bfloat16
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
