"""Helpers for project tests: run a project's script the way a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_script(
    project_dir: str | os.PathLike,
    script: str,
    *args: object,
    expect_code: int = 0,
    timeout: float = 300,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """Run `python <script> <args>` inside the project folder; assert its exit status.

    The child gets MPLBACKEND=Agg and no tqdm bars (TQDM_DISABLE=1), and output is captured
    so that a failure shows exactly what the user would have seen.
    """
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, script, *map(str, args)],
        cwd=Path(project_dir),
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != expect_code:
        raise AssertionError(
            f"python {script} {' '.join(map(str, args))} exited {result.returncode}, "
            f"expected {expect_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result
