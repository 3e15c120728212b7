"""One training step of the same LeNet-sized CNN, NumPy (ours) against PyTorch, on the CPU.

    python bench.py                 # batch 64, 32x32, one thread each

Prints the time per step of each, their ratio, and the GFLOP/s of the NumPy step against the
machine's measured single-thread float32 matmul rate. The last line is one JSON object.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from numpy_cnn import (
    Adam,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    out_size,
    softmax_cross_entropy,
)
from threadpoolctl import threadpool_limits

from shared.cli import arg, cli_main


@dataclass
class BenchConfig:
    batch_size: int = arg(64, "images per step", min=1)
    steps: int = arg(20, "timed steps per implementation (the best one counts)", min=1)
    threads: int = arg(1, "BLAS and torch threads for both", min=1)


def lenet_numpy(rng):
    """C1 conv 6@5x5 - pool - C3 conv 16@5x5 - pool - 120 - 84 - 10 (ReLU, max pool)."""
    return [
        Conv2D(1, 6, 5, rng=rng), ReLU(), MaxPool2D(2),
        Conv2D(6, 16, 5, rng=rng), ReLU(), MaxPool2D(2),
        Flatten(), Dense(16 * 5 * 5, 120, rng), ReLU(),
        Dense(120, 84, rng), ReLU(), Dense(84, 10, rng),
    ]  # fmt: skip


def lenet_torch():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def step_flops(N: int) -> float:
    """Multiply-adds x 2 of the forward pass, x 3 for forward + both backward products, less
    the first layer's input gradient, which neither implementation computes."""
    c1 = 2 * N * 6 * out_size(32, 5, 1, 0) ** 2 * 1 * 25  # conv: 2 N F Ho Wo C K K
    c3 = 2 * N * 16 * out_size(14, 5, 1, 0) ** 2 * 6 * 25
    dense = 2 * N * (400 * 120 + 120 * 84 + 84 * 10)
    return 3.0 * (c1 + c3 + dense) - c1


def best_time(fn, steps: int) -> float:
    fn()  # warm-up: allocations, caches
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed by other processes


def main(cfg: BenchConfig) -> dict:
    threadpool_limits(cfg.threads)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(0)
    x = rng.random((cfg.batch_size, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, cfg.batch_size)

    layers = lenet_numpy(rng)
    params = {
        f"{i}.{k}": (p, l.grads[k]) for i, l in enumerate(layers) for k, p in l.params.items()
    }
    opt = Adam(params, lr=1e-3)

    def numpy_step():
        out = x
        for layer in layers:
            out = layer.forward(out)
        _, dout = softmax_cross_entropy(out, y)
        for layer in reversed(layers[1:]):
            dout = layer.backward(dout)
        layers[0].backward(dout, input_grad=False)  # like autograd: no gradient for the images
        opt.step()

    model = lenet_torch()
    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step():
        loss = nn.functional.cross_entropy(model(tx), ty)
        torch_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch_opt.step()

    n = 1024
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    peak = 2 * n**3 / best_time(lambda: a @ b, 5) / 1e9

    t_numpy = best_time(numpy_step, cfg.steps)
    t_torch = best_time(torch_step, cfg.steps)
    gflops = step_flops(cfg.batch_size) / t_numpy / 1e9
    print(f"train step, batch {cfg.batch_size}, {cfg.threads} thread(s)")
    print(f"  numpy  {t_numpy * 1e3:8.2f} ms  {gflops:6.2f} GFLOP/s")
    print(f"  torch  {t_torch * 1e3:8.2f} ms")
    print(f"  numpy / torch time: {t_numpy / t_torch:.2f}x (target: <= 2)")
    print(f"  matmul peak {peak:.1f} GFLOP/s; numpy step reaches {gflops / peak:.1%} of it")
    ratios = {"numpy_over_torch_step_time": round(t_numpy / t_torch, 3)}
    print(json.dumps({"project": "cnn", "ratios": ratios}))
    return ratios


if __name__ == "__main__":
    cli_main(main, BenchConfig)
