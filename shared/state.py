"""A run's training state: everything the next step depends on, saved and restored as one.

    ckpt = load_for_resume(cfg, PROJECT_DIR, "model.pt", must_match=("n_layer", "n_embd"))
    ...                                                  # data, model, optimizer
    state = TrainingState(run.path / "model.pt", cfg, model=model, optimizer=optimizer,
                          data_rng=rng)                  # anything with state_dict, any generator
    start = state.restore(ckpt)                          # 0 when not resuming
    for step in range(start, cfg.steps):
        ...
        run.log(step=step + 1, loss=loss)                # log first, then save
        if (step + 1) % cfg.checkpoint_every == 0:
            state.save(step + 1, hidden=h)               # atomic; extra values come back too

What is kept, so that a run killed at any moment and resumed logs the same losses and ends with
the same weights as one that never stopped:

- every named part: objects with `state_dict()`/`load_state_dict()` (model, optimizer, learning
  rate scheduler, EMA, gradient scaler), NumPy `Generator`s, `random.Random`s and
  `torch.Generator`s (what a data order, a dropout mask or a noise draw comes from);
- the global generators: Python's `random`, NumPy's legacy `np.random`, torch's CPU generator
  and, once CUDA is in use, every CUDA device's;
- the step, the config, and any extra values given to `save` (carried recurrent state, the
  position in an epoch, the best validation loss so far, a tokenizer).

`.pt` files are written with `torch.save` (read back with `weights_only=True`; NumPy arrays in
them come back as tensors); `.npz` files hold NumPy arrays and a JSON skeleton of everything
else, so NumPy projects never import torch.
`restore` also truncates `log.jsonl` to the resumed step (the resumed run logs those steps
again) and removes temporary files that a run killed during a save left behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from shared.checkpoint import (
    atomic_write_text,
    load_arrays,
    load_checkpoint,
    load_model_state,
    save_arrays,
    save_checkpoint,
)
from shared.errors import CheckpointError
from shared.logging import latest_run
from shared.runtime import launched_world_size

ARRAY = "__array__"  # a leaf of the .npz skeleton that names an array of the file
TUPLE = "__tuple__"
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")  # what shared.checkpoint writes before renaming


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_must_match(saved: dict, cfg: Any, must_match: tuple[str, ...], path: Path) -> None:
    """One CheckpointError naming the first field that differs and both values."""
    for name in must_match:
        ours = getattr(cfg, name)
        theirs = saved.get(name)
        if isinstance(ours, tuple):
            ours = list(ours)
        if isinstance(theirs, tuple):
            theirs = list(theirs)
        if theirs != ours:
            raise CheckpointError(
                f"checkpoint {path} was trained with {flag(name)} {_show(theirs)}, "
                f"not {_show(ours)}; resume with the flags it was trained with"
            )


def _show(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def checkpoint_for(cfg: Any, project_dir: str | os.PathLike, filename: str) -> Path:
    """Where --resume looks: <--out>/<filename>, else runs/latest/<filename>."""
    folder = Path(cfg.out) if getattr(cfg, "out", "") else latest_run(project_dir)
    return folder / filename


def load_for_resume(
    cfg: Any,
    project_dir: str | os.PathLike,
    filename: str,
    must_match: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
) -> dict | None:
    """The checkpoint to resume from (None without --resume), checked before anything is written.

    Call it before `start_run`: a missing checkpoint or one trained with other flags must not
    touch the run folder.
    """
    if not getattr(cfg, "resume", False):
        return None
    path = checkpoint_for(cfg, project_dir, filename)
    ckpt = read_state(path, required=("step", "train_config", *required))
    check_must_match(ckpt["train_config"], cfg, must_match, path)
    # torchrun's process count is known before the process group starts: refuse now, not after
    # start_run has rewritten config.json.
    _check_process_count(ckpt, launched_world_size(), path)
    ckpt["path"] = str(path)
    return ckpt


def _check_process_count(ckpt: dict, world_size: int, source: Path) -> None:
    """Each process restores its own generators, so a resume needs the saving run's count."""
    ranks = ckpt.get("rng_ranks")
    saved_by = 1 if ranks is None else len(ranks)
    if saved_by != world_size:
        raise CheckpointError(
            f"checkpoint {source} was written by {saved_by} processes, not {world_size}: "
            f"resume it with torchrun --nproc_per_node {saved_by}"
            if saved_by > 1
            else f"checkpoint {source} was written by one process: resume it without torchrun"
        )


# ----------------------------------------------------------------------------- generators


def _is_numpy_generator(obj: Any) -> bool:
    return isinstance(obj, np.random.Generator)


def _is_torch_generator(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Generator)


def _global_rng_state() -> dict:
    # JSON keeps Python's arbitrary-precision ints exactly (PCG64's state is 128 bits).
    legacy = np.random.get_state()
    state = {
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps([legacy[0], legacy[1].tolist(), *legacy[2:]]),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng_state(state: dict) -> None:
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json.loads(state["numpy"])
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        import torch

        torch.set_rng_state(_as_byte_tensor(state["torch"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([_as_byte_tensor(s) for s in state["cuda"]])


def _as_byte_tensor(value):
    import torch

    return (
        torch.as_tensor(np.asarray(value, dtype=np.uint8)) if not torch.is_tensor(value) else value
    )


def _part_state(obj: Any) -> Any:
    if _is_numpy_generator(obj):
        return {"numpy_generator": json.dumps(obj.bit_generator.state)}
    if isinstance(obj, random.Random):
        return {"python_random": json.dumps(obj.getstate())}
    if _is_torch_generator(obj):
        return {"torch_generator": obj.get_state()}
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    raise TypeError(f"cannot save {type(obj).__name__}: give state_dict() or a generator")


def _load_part(obj: Any, state: Any, name: str, path: Path) -> None:
    if _is_numpy_generator(obj):
        obj.bit_generator.state = json.loads(state["numpy_generator"])
    elif isinstance(obj, random.Random):
        version, internal, gauss = json.loads(state["python_random"])
        obj.setstate((version, tuple(internal), gauss))
    elif _is_torch_generator(obj):
        obj.set_state(_as_byte_tensor(state["torch_generator"]))
    elif name == "model" and _is_torch_module(obj):
        load_model_state(obj, state, path)  # a readable error for a model that does not fit
    else:
        obj.load_state_dict(state)


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


# ----------------------------------------------------------------------------- files


def _to_skeleton(value: Any, arrays: dict[str, np.ndarray], key: str) -> Any:
    """Nested dicts/lists with arrays replaced by {ARRAY: name}; JSON-able, arrays set aside."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {ARRAY: key}
    if isinstance(value, dict):
        return {str(k): _to_skeleton(v, arrays, f"{key}/{k}") for k, v in value.items()}
    if isinstance(value, tuple):
        return {TUPLE: [_to_skeleton(v, arrays, f"{key}/{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_to_skeleton(v, arrays, f"{key}/{i}") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_skeleton(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {ARRAY}:
            return arrays[value[ARRAY]]
        if set(value) == {TUPLE}:
            return tuple(_from_skeleton(v, arrays) for v in value[TUPLE])
        return {k: _from_skeleton(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_skeleton(v, arrays) for v in value]
    return value


def _tensors_for_torch(value: Any) -> Any:
    """NumPy arrays and scalars as tensors and numbers: what `weights_only=True` can read."""
    if isinstance(value, np.ndarray):
        import torch

        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _tensors_for_torch(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_tensors_for_torch(v) for v in value)
    return value


def write_state(path: str | os.PathLike, obj: dict) -> Path:
    """A nested dict, atomically: torch.save for .pt, arrays + JSON skeleton for .npz."""
    path = Path(path)
    if path.suffix == ".npz":
        arrays: dict[str, np.ndarray] = {}
        skeleton = _to_skeleton(obj, arrays, "")
        return save_arrays(path, arrays, {"skeleton": skeleton})
    return save_checkpoint(path, _tensors_for_torch(obj))


def read_state(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict:
    """What write_state wrote; CheckpointError (naming the file) for anything else."""
    path = Path(path)
    if path.suffix == ".npz":
        arrays, meta = load_arrays(path)
        if "skeleton" not in meta:
            raise CheckpointError(f"checkpoint {path} was not written by this project")
        obj = _from_skeleton(meta["skeleton"], arrays)
        missing = [key for key in required if key not in obj]
        if missing:
            raise CheckpointError(
                f"checkpoint {path} lacks {', '.join(map(repr, missing))}: "
                "not a checkpoint of this model"
            )
        return obj
    return load_checkpoint(path, required=required)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete `.<name>.tmp-<pid>` files of processes that no longer run (killed mid-save)."""
    removed = []
    for candidate in Path(folder).glob(".*.tmp-*"):
        match = _TEMPORARY.match(candidate.name)
        if match is None or _alive(int(match.group(1))):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def truncate_log(path: str | os.PathLike, step: int, key: str = "step") -> int:
    """Keep log.jsonl's lines up to `step`: drop the first line past it and all after it.

    Returns how many lines were dropped. A line without `key` stays if it comes before the cut.
    """
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line half-written when the run was killed
            break
        if record.get(key, -1) > step:
            break
        kept.append(line)
    if len(kept) < len(lines):
        atomic_write_text(path, "".join(kept))
    return len(lines) - len(kept)


# ----------------------------------------------------------------------------- the state


class TrainingState:
    """The parts of one run that a resumed run must get back, saved in one atomic file.

    `parts` are keyword arguments: `model=`, `optimizer=`, `scheduler=`, `ema=`, generators
    (`data_rng=np.random.default_rng(seed)`), each saved under its name. `log_key` is the field
    of log.jsonl that counts progress (`step`, or `epoch` for runs that save per epoch).

    Under torchrun pass `dist=` (shared.runtime.Distributed) and call `save` on every rank: the
    parts are rank 0's (DDP keeps them equal; data generators must be seeded alike on all
    ranks), while the global generators, which differ per rank (dropout), are saved for each
    rank and given back to the same rank on resume.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        cfg: Any,
        log_key: str = "step",
        *,
        dist: Any = None,
        **parts: Any,
    ):
        self.path = Path(path)
        self.dist = dist
        self.cfg = cfg
        self.log_key = log_key
        self.parts = parts
        self.extra: dict[str, Any] = {}
        if not parts:
            raise ValueError("TrainingState needs at least one part to save")
        reserved = set(parts) & {"step", "train_config", "rng", "rng_ranks", "path"}
        if reserved:
            raise ValueError(f"parts may not be called {', '.join(sorted(reserved))}")

    def save(self, step: int, is_main: bool | None = None, **extra: Any) -> None:
        """Write everything the next step depends on, with `step` steps done (on rank 0)."""
        rng_ranks = self._gather_rng()
        if is_main is None:
            is_main = self.dist is None or self.dist.is_main
        if not is_main:
            return
        config = dataclasses.asdict(self.cfg) if dataclasses.is_dataclass(self.cfg) else self.cfg
        obj = {name: _part_state(part) for name, part in self.parts.items()}
        reserved = (set(obj) | {"train_config", "rng", "rng_ranks", "path"}) & set(extra)
        if reserved:
            raise ValueError(f"extra values may not be called {', '.join(sorted(reserved))}")
        obj.update(extra)
        obj["step"] = int(step)
        obj["train_config"] = _plain(config)
        obj["rng"] = _global_rng_state()
        if rng_ranks is not None:
            obj["rng_ranks"] = rng_ranks
        write_state(self.path, obj)

    def _gather_rng(self) -> list | None:
        if self.dist is None or not self.dist.enabled:
            return None
        import torch.distributed as torch_dist

        states: list = [None] * self.dist.world_size
        torch_dist.all_gather_object(states, _global_rng_state())
        return states

    def _own_rng(self, ckpt: dict, source: Path) -> dict:
        ranks = ckpt.get("rng_ranks")
        _check_process_count(ckpt, 1 if self.dist is None else self.dist.world_size, source)
        return ckpt["rng"] if ranks is None else ranks[self.dist.rank]

    def restore(self, ckpt: dict | None) -> int:
        """Put every part back from `ckpt` (from load_for_resume) and return its step.

        Without a checkpoint: 0. Either way, stale temporaries of the run folder are removed.
        The extra values given to `save` are in `self.extra` afterwards.
        """
        main = self.dist is None or self.dist.is_main  # only rank 0 touches the run folder
        if main:
            remove_stale_temporaries(self.path.parent)
        if ckpt is None:
            return 0
        source = Path(ckpt.get("path", self.path))
        missing = [name for name in self.parts if name not in ckpt]
        if missing:
            raise CheckpointError(
                f"checkpoint {source} lacks {', '.join(missing)}: it was written by another version"
            )
        for name, part in self.parts.items():
            _load_part(part, ckpt[name], name, source)
        _set_global_rng_state(self._own_rng(ckpt, source))
        skip = set(self.parts) | {"step", "train_config", "rng", "rng_ranks", "path"}
        self.extra = {k: v for k, v in ckpt.items() if k not in skip}
        step = int(ckpt["step"])
        if main:
            truncate_log(self.path.parent / "log.jsonl", step, self.log_key)
        return step


def _plain(value: Any) -> Any:
    """Config values as JSON-like plain data (tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
