"""Run folders, per-step logs, final metrics and progress bars.

A run lives in `<project>/runs/<YYYYmmdd-HHMMSS>/` (or `--out DIR`) and holds `config.json`,
`log.jsonl` (one JSON object per logged step), `metrics.json` (the final numbers) and whatever
checkpoints and figures the project writes. `<project>/runs/latest` points at the newest run,
which is where `inference.py` looks by default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shared.checkpoint import atomic_write_json
from shared.errors import UserError

LATEST = "latest"
KILL_AT = "DLFS_KILL_AT"


def progress(iterable=None, *, total: int | None = None, desc: str | None = None, **kwargs):
    """A tqdm bar on stderr, refreshed at most twice a second so logs stay small.

    Quiet when stderr is not a terminal (a pipe, a file, CI) and when TQDM_DISABLE=1;
    `disable=True` turns it off for other reasons (say, on every rank but the first).
    """
    if os.environ.get("TQDM_DISABLE", "") not in ("", "0"):
        kwargs["disable"] = True
    elif not kwargs.get("disable"):
        kwargs["disable"] = None  # tqdm's own rule: no bar unless stderr is a terminal
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, **kwargs)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _point_latest(runs_dir: Path, run_path: Path) -> None:
    """runs/latest -> run_path, replaced atomically (symlink made beside it, then renamed)."""
    link = runs_dir / LATEST
    try:
        target = os.path.relpath(run_path, runs_dir)
    except ValueError:  # another drive on Windows
        target = str(run_path)
    tmp = runs_dir / f".{LATEST}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)


class Run:
    """One training run's folder: config in, log lines during, metrics out."""

    def __init__(self, task: str, path: Path, is_main: bool = True):
        self.task = task
        self.path = path
        self.is_main = is_main
        self.start_time = time.time()

    def log(self, **values: Any) -> None:
        """Append one JSON line (with the elapsed seconds) to log.jsonl."""
        if not self.is_main:
            return
        record = {"time_s": round(time.time() - self.start_time, 3), **_jsonable(values)}
        with open(self.path / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        _kill_if_asked(record)

    def finish(self, metric: str, value: float, higher_is_better: bool, **extra: Any) -> dict:
        """Write metrics.json, print one summary line, and return the metrics."""
        metrics = {
            "task": self.task,
            "metric": metric,
            "value": _jsonable(value),
            "higher_is_better": higher_is_better,
            "wall_time_s": round(time.time() - self.start_time, 2),
            **_jsonable(extra),
        }
        if self.is_main:
            atomic_write_json(self.path / "metrics.json", metrics)
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            print(
                f"{self.task}: {metric} = {shown} in {metrics['wall_time_s']:.1f} s -> {self.path}"
            )
        return metrics


def _kill_if_asked(record: dict) -> None:
    """Testing hook: DLFS_KILL_AT=N sends this process SIGKILL right after it logs step N.

    The shared resume test uses it to stop a run between two checkpoints the way a crash or an
    out-of-memory kill would (no cleanup, no flush of anything not yet written).
    """
    target = os.environ.get(KILL_AT)
    if target is None:
        return
    step = record.get("step", record.get("epoch"))
    if step is not None and step == int(target):
        os.kill(os.getpid(), signal.SIGKILL)


def start_run(task: str, cfg: Any, project_dir: str | os.PathLike, is_main: bool = True) -> Run:
    """Make (or, with cfg.resume, reopen) the run folder and record the config in it."""
    runs_dir = Path(project_dir) / "runs"
    out = getattr(cfg, "out", "")
    resume = getattr(cfg, "resume", False)
    if out:
        path = Path(out)
    elif resume:
        path = latest_run(project_dir)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = runs_dir / stamp
        suffix = 1
        while path.exists():
            path = runs_dir / f"{stamp}-{suffix}"
            suffix += 1
    if resume and not path.is_dir():
        raise UserError(f"cannot resume: run folder {path} does not exist")
    run = Run(task, path.resolve(), is_main)
    log = path / "log.jsonl"
    if resume and log.is_file() and (records := read_log(log)):
        # The clock goes on from the last line: time_s and wall_time_s count the whole run
        # (all but the moments between that line and the stop), not only the resumed part.
        run.start_time -= records[-1].get("time_s", 0.0)
    if is_main:
        path.mkdir(parents=True, exist_ok=True)
        config = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
        atomic_write_json(path / "config.json", _jsonable(config))
        if not out or path.resolve().parent == runs_dir.resolve():
            runs_dir.mkdir(parents=True, exist_ok=True)
            _point_latest(runs_dir, path.resolve())
    return run


def latest_run(project_dir: str | os.PathLike) -> Path:
    """The folder runs/latest points at; a UserError when nothing has been trained yet."""
    link = Path(project_dir) / "runs" / LATEST
    if not link.exists():
        raise UserError(f"no run found at {link} (train first: python train.py)")
    return link.resolve()


def default_checkpoint(project_dir: str | os.PathLike, filename: str) -> Path:
    """runs/latest/<filename>, the checkpoint inference.py uses when given none."""
    return latest_run(project_dir) / filename


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a log.jsonl file (a run folder is accepted too)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
