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
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `python <script> <args>` inside the project folder; assert its exit status.

    The child gets MPLBACKEND=Agg and no tqdm bars (TQDM_DISABLE=1), and output is captured
    so that a failure shows exactly what the user would have seen; `env` adds variables.
    """
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1", PYTHONUNBUFFERED="1", **(env or {}))
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


def run_torchrun(
    project_dir: str | os.PathLike, script: str, *args: object, nproc: int = 2, **kwargs
) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node nproc <script> <args>` on the CPU (gloo).

    Each process gets one thread and no GPU, so the test is the same on every machine.
    """
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc))
    env = {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **kwargs.pop("env", {})}
    return run_script(project_dir, torchrun[0], *torchrun[1:], script, *args, env=env, **kwargs)


def assert_tensors_close(one, two, atol: float = 1e-6, rtol: float = 1e-5, where: str = "") -> None:
    """Nested dicts/lists of tensors or arrays (state dicts, checkpoints) agree entry by entry."""
    if isinstance(one, dict):
        assert isinstance(two, dict) and one.keys() == two.keys(), f"{where}: keys differ"
        for key in one:
            assert_tensors_close(one[key], two[key], atol, rtol, f"{where}/{key}")
    elif isinstance(one, (list, tuple)):
        assert len(one) == len(two), f"{where}: lengths differ"
        for i, (a, b) in enumerate(zip(one, two)):
            assert_tensors_close(a, b, atol, rtol, f"{where}[{i}]")
    elif hasattr(one, "shape"):
        import numpy as np

        a, b = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x) for x in (one, two))
        assert a.shape == b.shape, f"{where}: shapes {a.shape} and {b.shape}"
        if a.dtype.kind in "fc":
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=where)
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert one == two, f"{where}: {one!r} != {two!r}"


def numerical_gradient(f, x, dout=None, h: float = 1e-6):
    """Central differences (f(x + h) - f(x - h)) / 2h, one entry of the array x at a time.

    `f` takes no arguments and reads x, which is changed in place and put back. With `dout`,
    f may return an array and the gradient is that of sum(dout * f()), the quantity a layer's
    backward(dout) returns the gradient of.
    """
    import numpy as np

    def scalar() -> float:
        value = f()
        return float(value) if dout is None else float(np.sum(value * dout))

    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        plus = scalar()
        x[index] = old - h
        minus = scalar()
        x[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


def relative_error(a, b) -> float:
    """|a - b| / (|a| + |b|), the scale-free distance CS231n's gradient checks use."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))
