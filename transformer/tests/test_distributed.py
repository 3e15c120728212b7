"""torchrun: two processes on one global batch take the steps of one process with it, only
rank 0 writes, and a run resumes under torchrun; --precision bf16 trains close to float32."""

import json
from pathlib import Path

import pytest
import torch

from shared.logging import read_log
from shared.testing import assert_tensors_close, run_script, run_torchrun

PROJECT = Path(__file__).parents[1]
# Dry runs: batches of 8, 4 steps, checkpoints at steps 2 and 4. No dropout, so neither run
# draws random masks and one process's steps can be compared with two processes' steps.
TINY = ("--dry-run", "--device", "cpu", "--dropout", "0")
# The key biases get a zero gradient but for rounding (see test_model.py): Adam moves them by
# about the learning rate either way, differently in every summation order, and nothing else
# depends on them.
NOISE_ONLY = ".k_proj.bias"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """trained(task, processes): the folder of a dry run, made the first time it is asked for."""
    made = {}

    # --task mlm reads a small file: the default, the standard library's docstrings, takes
    # seconds to gather.
    text = tmp_path_factory.mktemp("text") / "numbers.txt"
    text.write_text(" ".join(f"{i} is {('even', 'odd')[i % 2]}." for i in range(400)))

    def get(task: str, processes: int) -> Path:
        if (task, processes) not in made:
            out = tmp_path_factory.mktemp(f"{task}-{processes}")
            flags = (*TINY, "--task", task, "--pretrain-text", text, "--out", out)
            if processes == 1:
                run_script(PROJECT, "train.py", *flags)
            else:
                run_torchrun(PROJECT, "train.py", *flags, nproc=processes)
            made[task, processes] = out
        return made[task, processes]

    return get


def weights(run: Path, all_of_them: bool = False) -> dict:
    state = torch.load(run / "model.pt", weights_only=True)["model"]
    return {k: v for k, v in state.items() if all_of_them or not k.endswith(NOISE_ONLY)}


def losses(run: Path) -> dict:
    return {r["step"]: r["loss"] for r in read_log(run) if "loss" in r}


@pytest.mark.parametrize("task", ["translate", "mlm"])
def test_two_processes_take_the_steps_of_one_process_with_the_whole_batch(task, trained):
    # translate: each process's 4 sentences hold a different number of target characters;
    # mlm: each process's windows a different number of masked characters.
    one_process, two_processes = trained(task, 1), trained(task, 2)
    assert_tensors_close(weights(two_processes), weights(one_process), atol=1e-5, rtol=0)
    assert losses(two_processes) == pytest.approx(losses(one_process), rel=1e-6)
    # Rank 1 wrote nothing: the same files, and as many log lines as one process wrote.
    assert sorted(p.name for p in two_processes.iterdir()) == sorted(
        p.name for p in one_process.iterdir()
    )
    assert len(read_log(two_processes)) == len(read_log(one_process))
    metrics = json.loads((two_processes / "metrics.json").read_text())
    assert metrics["processes"] == 2


def test_resume_under_torchrun_continues_exactly_and_needs_the_same_process_count(
    trained, tmp_path
):
    two_processes = trained("translate", 2)
    run_torchrun(PROJECT, "train.py", *TINY, "--max-iters", "2", "--out", tmp_path)
    run_torchrun(PROJECT, "train.py", *TINY, "--resume", "--out", tmp_path)
    resumed, uninterrupted = weights(tmp_path, True), weights(two_processes, True)
    assert_tensors_close(resumed, uninterrupted, atol=0, rtol=0)
    assert losses(tmp_path) == losses(two_processes)
    refused = run_script(PROJECT, "train.py", *TINY, "--resume", "--out", tmp_path, expect_code=2)
    assert "written by 2 processes, not 1" in refused.stderr


def test_bf16_autocast_trains_close_to_float32(trained, tmp_path):
    run_script(PROJECT, "train.py", *TINY, "--precision", "bf16", "--out", tmp_path)
    fp32, mixed = losses(trained("translate", 1)), losses(tmp_path)
    assert mixed != fp32 and mixed == pytest.approx(fp32, rel=0.02)
