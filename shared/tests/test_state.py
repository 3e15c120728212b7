"""shared.state: exact restore, must-match checks, log truncation, stale temporaries."""

import dataclasses
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from shared.cli import RunConfig
from shared.errors import CheckpointError
from shared.state import (
    TrainingState,
    check_must_match,
    load_for_resume,
    read_state,
    remove_stale_temporaries,
    truncate_log,
    write_state,
)


@dataclasses.dataclass
class Config(RunConfig):
    width: int = 4
    dims: tuple[int, ...] = (2, 3)


class NumpyModel:
    """A stand-in for a NumPy project's model: state_dict of arrays."""

    def __init__(self, rng):
        self.W = rng.standard_normal((3, 2))

    def state_dict(self):
        return {"W": self.W.copy(), "meta": {"t": 3, "shape": (3, 2)}}

    def load_state_dict(self, state):
        self.W[...] = state["W"]


def draws(data_rng, torch_gen):
    """One number from every generator the state keeps."""
    return (
        random.random(),
        float(np.random.rand()),
        float(data_rng.random()),
        float(torch.rand(1)),
        float(torch.rand(1, generator=torch_gen)),
    )


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_restore_gives_back_every_generator_and_part(tmp_path, suffix):
    cfg = Config(out=str(tmp_path))
    rng, gen = np.random.default_rng(1), torch.Generator().manual_seed(2)
    model = NumpyModel(rng) if suffix == ".npz" else torch.nn.Linear(3, 2)
    parts = dict(model=model, data_rng=rng, noise=gen)
    state = TrainingState(tmp_path / f"model{suffix}", cfg, **parts)
    state.save(5, hidden=np.arange(3.0))
    expected = draws(rng, gen)
    saved_weights = {k: np.asarray(v).copy() for k, v in model.state_dict().items() if k != "meta"}

    # Another process would start from other generator states and other weights.
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    rng2, gen2 = np.random.default_rng(7), torch.Generator().manual_seed(7)
    model2 = NumpyModel(rng2) if suffix == ".npz" else torch.nn.Linear(3, 2)
    state2 = TrainingState(
        tmp_path / f"model{suffix}", cfg, model=model2, data_rng=rng2, noise=gen2
    )
    cfg2 = dataclasses.replace(cfg, resume=True)
    step = state2.restore(load_for_resume(cfg2, tmp_path, f"model{suffix}", must_match=("width",)))
    assert step == 5
    assert draws(rng2, gen2) == expected
    for key, value in saved_weights.items():
        np.testing.assert_array_equal(np.asarray(model2.state_dict()[key]).copy(), value)
    np.testing.assert_array_equal(np.asarray(state2.extra["hidden"]), np.arange(3.0))


def test_npz_state_keeps_nested_lists_tuples_and_scalars(tmp_path):
    obj = {"a": [np.ones(2), {"b": (1, 2.5, "x")}], "c": None, "d": np.int64(3)}
    write_state(tmp_path / "s.npz", obj)
    back = read_state(tmp_path / "s.npz")
    np.testing.assert_array_equal(back["a"][0], np.ones(2))
    assert back["a"][1] == {"b": (1, 2.5, "x")}
    assert back["c"] is None and back["d"] == 3


def test_must_match_names_the_flag_and_both_values(tmp_path):
    with pytest.raises(CheckpointError, match=r"--width 8, not 4"):
        check_must_match({"width": 8}, Config(), ("width",), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"--dims 2 4, not 2 3"):
        check_must_match({"dims": [2, 4]}, Config(), ("dims",), tmp_path / "m.pt")
    check_must_match({"width": 4, "dims": [2, 3]}, Config(), ("width", "dims"), tmp_path)


def test_resume_refuses_a_checkpoint_trained_with_other_flags(tmp_path):
    TrainingState(tmp_path / "model.pt", Config(width=8), model=torch.nn.Linear(2, 2)).save(1)
    with pytest.raises(CheckpointError, match="--width 8, not 4"):
        load_for_resume(Config(out=str(tmp_path), resume=True), tmp_path, "model.pt", ("width",))


def test_resume_without_a_checkpoint_is_one_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_for_resume(Config(out=str(tmp_path), resume=True), tmp_path, "model.pt")
    assert load_for_resume(Config(out=str(tmp_path)), tmp_path, "model.pt") is None


def test_restore_truncates_the_log_to_the_resumed_step(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [{"step": s, "loss": 1.0 / s} for s in range(1, 8)]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 8, "lo')
    state = TrainingState(tmp_path / "model.pt", Config(), model=torch.nn.Linear(2, 2))
    state.save(4)
    assert state.restore(read_state(tmp_path / "model.pt")) == 4
    kept = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert kept == [1, 2, 3, 4]


def test_truncate_log_counts_epochs_when_asked(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(1, 6)))
    assert truncate_log(log, 2, key="epoch") == 3
    assert truncate_log(log, 2, key="epoch") == 0


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".model.pt.tmp-{dead_pid}"
    mine = tmp_path / f".model.pt.tmp-{os.getpid()}"
    stale.write_bytes(b"half")
    mine.write_bytes(b"being written")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and mine.exists()


def test_restore_removes_what_a_kill_during_save_left(tmp_path):
    orphan = tmp_path / ".model.pt.tmp-999999999"
    orphan.write_bytes(b"half")
    TrainingState(tmp_path / "model.pt", Config(), model=torch.nn.Linear(2, 2)).restore(None)
    assert not orphan.exists()


def test_kill_hook_stops_the_process_right_after_logging_that_step(tmp_path):
    code = (
        "from shared.logging import Run\n"
        "from pathlib import Path\n"
        f"run = Run('t', Path({str(tmp_path)!r}))\n"
        "for step in range(1, 6):\n"
        "    run.log(step=step)\n"
    )
    env = dict(os.environ, DLFS_KILL_AT="3")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=os.getcwd())
    assert done.returncode == -9
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_extra_values_may_not_shadow_the_state_itself(tmp_path):
    state = TrainingState(tmp_path / "model.pt", Config(), model=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="rng"):
        state.save(1, rng=3)


def test_parts_may_not_take_the_names_the_state_uses_itself(tmp_path):
    with pytest.raises(ValueError, match="rng"):
        TrainingState(tmp_path / "model.pt", Config(), rng=np.random.default_rng(0))
