"""Checkpoints that are never half-written and that fail to load in one readable line.

Every write goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed
over the target: a rename within one file system is atomic, so a reader (or a run killed in the
middle of a save) sees either the old file or the new one, never a mix.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import CheckpointError

META_KEY = "__meta__"


def _atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: str | os.PathLike, obj: dict) -> Path:
    """torch.save, atomically. Keep to tensors, numbers, strings, lists and dicts."""
    import torch

    return _atomic_write(path, lambda fh: torch.save(obj, fh))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist (train first: python train.py)")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")


def _check_keys(obj: Any, required: Iterable[str], path: Path) -> None:
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    missing = [key for key in required if key not in obj]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {', '.join(map(repr, missing))}: "
            "not a checkpoint of this model"
        )


def load_checkpoint(
    path: str | os.PathLike, required: Iterable[str] = (), map_location: Any = "cpu"
) -> dict:
    """torch.load with weights_only=True; any problem becomes a CheckpointError naming the file."""
    import torch

    path = Path(path)
    _check_file(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for bad bytes; all mean the same here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({reason})") from None
    _check_keys(obj, required, path)
    return obj


def load_model_state(model, state_dict: dict, path: str | os.PathLike = "checkpoint") -> None:
    """Strict load_state_dict whose failure names the file and the first mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    if unexpected:
        more = " ..." if len(unexpected) > 3 else ""
        problems.append(f"unexpected {', '.join(unexpected[:3])}{more}")
    if wrong_shape:
        problems.append(f"shape {wrong_shape[0]}" + (" ..." if len(wrong_shape) > 1 else ""))
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state_dict)


def save_arrays(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict | None = None
) -> Path:
    """NumPy arrays (and a JSON-able dict of metadata) in one .npz file, atomically."""
    if META_KEY in arrays:
        raise ValueError(f"{META_KEY!r} is reserved for the metadata")
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload[META_KEY] = np.array(json.dumps(meta or {}))
    return _atomic_write(path, lambda fh: np.savez(fh, **payload))


def load_arrays(
    path: str | os.PathLike, required: Iterable[str] = ()
) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and metadata from save_arrays, with allow_pickle=False."""
    path = Path(path)
    _check_file(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({reason})") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"checkpoint {path} has no metadata: not written by save_arrays")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata") from None
    _check_keys(arrays, required, path)
    return arrays, meta
