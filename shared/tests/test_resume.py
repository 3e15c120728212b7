"""Every project resumes exactly: killed between two checkpoints and resumed, a run logs the same
numbers and ends with the same weights, bit for bit on the CPU, as one that never stopped.

Each case runs the project's train.py three times in subprocesses: once straight through; once
with DLFS_KILL_AT=N, which makes shared.logging SIGKILL the process right after it logs step N
(a step chosen at random between two checkpoints); and once more with --resume on that killed
run. The resumed run's log.jsonl (timings aside) and its final checkpoint (every tensor or
array of every part: model, optimizer, generators, ...) must equal the uninterrupted run's.

To see it fail, break a restore on purpose: in shared/state.py, make `_load_part` skip the
generators (`if _is_numpy_generator(obj): return`), or drop `_set_global_rng_state(...)` from
`TrainingState.restore`, then run `nox -s shared -- -k resume`.

A case is (extra flags of all three runs, log key, checkpoint file, first checkpoint step,
second checkpoint step): the kill lands in (first, second], so the resumed run starts at first.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.state import read_state

ROOT = Path(__file__).resolve().parents[2]

# project: (flags, log key, checkpoint file, first checkpoint, second checkpoint)
CASES: dict[str, tuple[tuple[str, ...], str, str, int, int]] = {
    # image GANs: a conditional WGAN-GP (labels, latents, penalty mixes all from torch's
    # generator); 4 epochs of 2 steps, every step logged, checkpoints at steps 4 and 8
    "gan": (
        ("--dry-run", "--model", "wgan-gp", "--conditional", "--threads", "1"),
        "step",
        "model.pt",
        4,
        8,
    ),
    # autoencoder steps 1-2, diffusion steps 3-6; checkpoints at 2 (with the latent scale), 4, 6
    "stable_diffusion": (("--dry-run", "--threads", "1"), "step", "model.pt", 2, 4),
    # NumPy CNN, 2 epochs of 6 steps; checkpoints every 2 steps: resumed mid-epoch at step 4
    "cnn": (("--dry-run", "--batch-size", "16", "--threads", "1"), "step", "model.npz", 4, 6),
    # text windows with the hidden state carried; every step logged, checkpoints at 3 and 6
    "rnn": (("--dry-run", "--threads", "1"), "step", "model.npz", 3, 6),
    # DDPM dry run, 4 steps, every step logged; checkpoints at 2 and 4 (model, EMA, noise)
    "diffusion": (("--dry-run", "--threads", "1"), "step", "model.pt", 2, 4),
    # three VAEs side by side, 4 epochs on a slice of the digits, each logged; checkpoints at 2, 4
    "vae": (("--dry-run", "--threads", "1"), "epoch", "model.pt", 2, 4),
    # 3 epochs of 2 steps, every step logged, the validation mAP per epoch; checkpoints at 2, 4, 6
    "detection": (("--dry-run", "--threads", "1"), "step", "model.pt", 2, 4),
    # mlp: 4 epochs of 5 steps, every epoch logged, checkpoints at epochs 2 and 4; dropout (the
    # generator) and batch norm (running statistics) on
    "mlp": (
        ("--dry-run", "--dropout", "0.1", "--batchnorm", "--threads", "1"),
        "epoch",
        "model.npz",
        2,
        4,
    ),
    # 4 steps, every step logged; checkpoints at 2 and 4; dropout so torch's generator matters
    "gpt2": (("--dry-run", "--dropout", "0.1", "--threads", "1"), "step", "model.pt", 2, 4),
    # 4 steps, every step logged; checkpoints at 2, 4; dropout (torch's generator) and the
    # running mean of the weights over the last 3 steps, begun before the first checkpoint
    "transformer": (
        ("--dry-run", "--dropout", "0.1", "--average-last", "3", "--threads", "1"),
        "step",
        "model.pt",
        2,
        4,
    ),  # fmt: skip
}

TIMING = ("time", "per_s", "wall", "elapsed", "seconds")


def _run(project: str, out: Path, flags: tuple[str, ...], *extra: str, kill_at: int | None = None):
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    env.pop("DLFS_KILL_AT", None)
    if kill_at is not None:
        env["DLFS_KILL_AT"] = str(kill_at)
    return subprocess.run(
        [sys.executable, "train.py", *flags, "--out", str(out), *extra],
        cwd=ROOT / project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _numbers(path: Path) -> list[dict]:
    """log.jsonl without the fields that measure time."""
    records = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not any(word in k for word in TIMING)} for r in records]


def _leaves(value, prefix=""):
    """(name, array) for every tensor or array in a nested checkpoint."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("train_config", "path"):
                continue
            yield from _leaves(item, f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{prefix}/{i}")
    elif hasattr(value, "detach"):
        yield prefix, value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray):
        yield prefix, value
    else:
        yield prefix, np.asarray(value)


@pytest.mark.parametrize("project", sorted(CASES))
def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(project, tmp_path):
    flags, key, checkpoint, first, second = CASES[project]
    kill_at = random.Random().randint(first + 1, second)
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    done = _run(project, straight, flags)
    assert done.returncode == 0, done.stderr
    stopped = _run(project, killed, flags, kill_at=kill_at)
    assert stopped.returncode == -9, f"not killed at {key} {kill_at}:\n{stopped.stderr}"
    resumed = _run(project, killed, flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr

    assert not list(killed.glob(".*.tmp-*")), "a temporary file survived"
    assert _numbers(killed) == _numbers(straight), f"logs differ after a kill at {key} {kill_at}"
    ours = dict(_leaves(read_state(killed / checkpoint)))
    theirs = dict(_leaves(read_state(straight / checkpoint)))
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert np.array_equal(ours[name], value), f"{name} differs after a kill at {key} {kill_at}"
