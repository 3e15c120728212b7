import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from shared.checkpoint import (
    atomic_write_json,
    load_arrays,
    load_checkpoint,
    load_model_state,
    save_arrays,
    save_checkpoint,
)
from shared.errors import CheckpointError, UserError


def test_checkpoint_round_trip_keeps_tensors_and_config(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "config": {"lr": 0.1, "dims": [2, 3]}}
    save_checkpoint(tmp_path / "model.pt", state)
    loaded = load_checkpoint(tmp_path / "model.pt", required=("model", "config"))
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["config"] == state["config"]


def test_arrays_round_trip_keeps_arrays_and_metadata(tmp_path):
    arrays = {"W1": np.random.default_rng(0).standard_normal((3, 4)), "b1": np.zeros(4)}
    save_arrays(tmp_path / "model.npz", arrays, meta={"hidden": [4], "name": "mlp"})
    loaded, meta = load_arrays(tmp_path / "model.npz", required=("W1",))
    assert meta == {"hidden": [4], "name": "mlp"}
    assert set(loaded) == {"W1", "b1"}
    np.testing.assert_array_equal(loaded["W1"], arrays["W1"])


@pytest.mark.parametrize("loader", [load_checkpoint, load_arrays])
def test_missing_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path, loader):
    with pytest.raises(CheckpointError, match=r"nothere\.pt does not exist"):
        loader(tmp_path / "nothere.pt")


@pytest.mark.parametrize("loader", [load_checkpoint, load_arrays])
def test_empty_file_is_a_checkpoint_error(tmp_path, loader):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        loader(tmp_path / "empty.pt")


@pytest.mark.parametrize("loader", [load_checkpoint, load_arrays])
def test_folder_instead_of_file_is_a_checkpoint_error(tmp_path, loader):
    with pytest.raises(CheckpointError, match="is a folder"):
        loader(tmp_path)


def test_truncated_torch_checkpoint_is_a_checkpoint_error(tmp_path):
    save_checkpoint(tmp_path / "model.pt", {"model": {"w": torch.randn(100, 100)}})
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "model.pt")


def test_truncated_array_checkpoint_is_a_checkpoint_error(tmp_path):
    save_arrays(tmp_path / "model.npz", {"w": np.ones((100, 100))})
    data = (tmp_path / "model.npz").read_bytes()
    (tmp_path / "model.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_arrays(tmp_path / "model.npz")


@pytest.mark.parametrize("loader", [load_checkpoint, load_arrays])
def test_garbage_file_is_a_checkpoint_error(tmp_path, loader):
    (tmp_path / "model.pt").write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        loader(tmp_path / "model.pt")


class Custom:
    """An arbitrary class: weights_only loading must refuse to construct it."""


def test_pickled_object_is_refused_by_weights_only_loading(tmp_path):
    torch.save({"model": Custom()}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "model.pt")


def test_checkpoint_lacking_required_keys_is_a_checkpoint_error(tmp_path):
    save_checkpoint(tmp_path / "model.pt", {"model": {}})
    with pytest.raises(CheckpointError, match="lacks 'config'"):
        load_checkpoint(tmp_path / "model.pt", required=("model", "config"))


def test_array_checkpoint_lacking_required_arrays_is_a_checkpoint_error(tmp_path):
    save_arrays(tmp_path / "model.npz", {"W1": np.ones(2)})
    with pytest.raises(CheckpointError, match="lacks 'W2'"):
        load_arrays(tmp_path / "model.npz", required=("W1", "W2"))


def test_npz_without_metadata_is_a_checkpoint_error(tmp_path):
    np.savez(tmp_path / "model.npz", W1=np.ones(2))
    with pytest.raises(CheckpointError, match="no metadata"):
        load_arrays(tmp_path / "model.npz")


def test_non_dict_checkpoint_is_a_checkpoint_error(tmp_path):
    save_checkpoint(tmp_path / "model.pt", [1, 2, 3])
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(tmp_path / "model.pt")


def test_state_of_another_shape_is_a_checkpoint_error_naming_the_parameter(tmp_path):
    model = torch.nn.Linear(3, 2)
    other = torch.nn.Linear(4, 2).state_dict()
    with pytest.raises(CheckpointError, match=r"weight \(2, 4\) vs \(2, 3\)"):
        load_model_state(model, other, tmp_path / "model.pt")


def test_state_with_missing_and_unexpected_keys_is_a_checkpoint_error():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match="missing bias.*unexpected extra"):
        load_model_state(model, {"weight": torch.zeros(2, 3), "extra": torch.zeros(1)}, "x.pt")


def test_checkpoint_error_is_a_user_error():
    assert issubclass(CheckpointError, UserError)


def test_atomic_json_leaves_no_temporary_files(tmp_path):
    atomic_write_json(tmp_path / "metrics.json", {"value": 1.0})
    atomic_write_json(tmp_path / "metrics.json", {"value": 2.0})
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert '"value": 2.0' in (tmp_path / "metrics.json").read_text()


SAVER = textwrap.dedent(
    """
    import sys, torch
    from shared.checkpoint import save_checkpoint
    path = sys.argv[1]
    big = torch.ones(4_000_000)  # 16 MB, so that a save takes a while
    step = 1
    while True:
        print(step, flush=True)
        save_checkpoint(path, {"step": step, "weights": big * step})
        step += 1
    """
)


def test_sigkill_during_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"step": 0, "weights": torch.zeros(4_000_000)})
    for delay in (0.0, 0.01, 0.03, 0.07):
        child = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True
        )
        child.stdout.readline()  # the first save has begun
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        loaded = load_checkpoint(path, required=("step", "weights"))
        assert torch.all(loaded["weights"] == loaded["step"])
