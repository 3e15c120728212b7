"""One epoch of the same MLP in this NumPy code, in PyTorch (CPU) and in scikit-learn.

    python bench.py

784 -> 256 -> 256 -> 10, ReLU, softmax cross-entropy, plain SGD, batch 128, float32, on random
MNIST-shaped data (the timing does not depend on the values). Each contender runs the epoch
`--repeats` times; the best time counts. The last line is JSON: time ratios to PyTorch.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass

import numpy as np

from shared.cli import arg, cli_main


@dataclass
class BenchConfig:
    n_samples: int = arg(5_000, "examples in the epoch", min=128)
    repeats: int = arg(2, "epochs timed per contender (best counts)", min=1)
    threads: int = arg(0, "torch threads (0: torch's default)", min=0)


SIZES = (784, 256, 256, 10)
BATCH, LR = 128, 0.01


def best_time(epoch, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_epoch(X, y):
    from model import MLP, Dense, ReLU, SoftmaxCrossEntropy
    from optim import SGD

    rng = np.random.default_rng(0)
    layers = [Dense(SIZES[0], SIZES[1], rng, dtype=np.float32), ReLU()]
    layers += [Dense(SIZES[1], SIZES[2], rng, dtype=np.float32), ReLU()]
    model = MLP([*layers, Dense(SIZES[2], SIZES[3], rng, dtype=np.float32)])
    loss_fn, optimizer = SoftmaxCrossEntropy(), SGD(model.parameters(), LR)

    def epoch():
        for start in range(0, len(X), BATCH):
            _, dz = loss_fn(model.forward(X[start : start + BATCH]), y[start : start + BATCH])
            model.backward(dz)
            optimizer.step()

    return epoch


def torch_epoch(X, y):
    import torch

    model = torch.nn.Sequential(
        torch.nn.Linear(SIZES[0], SIZES[1]),
        torch.nn.ReLU(),
        torch.nn.Linear(SIZES[1], SIZES[2]),
        torch.nn.ReLU(),
        torch.nn.Linear(SIZES[2], SIZES[3]),
    )
    optimizer = torch.optim.SGD(model.parameters(), LR)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)

    def epoch():
        for start in range(0, len(X), BATCH):
            loss = torch.nn.functional.cross_entropy(
                model(X_t[start : start + BATCH]), y_t[start : start + BATCH]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def sklearn_epoch(X, y):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def epoch():  # one pass, no shuffling, no early stopping: as close as sklearn gets
        clf = MLPClassifier(
            SIZES[1:-1], solver="sgd", learning_rate_init=LR, momentum=0.0, batch_size=BATCH,
            max_iter=1, shuffle=False, random_state=0,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)

    return epoch


def main(cfg: BenchConfig) -> dict:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(0)
    X = rng.random((cfg.n_samples, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], cfg.n_samples)
    print(f"one epoch of {cfg.n_samples} examples, {' -> '.join(map(str, SIZES))}, batch {BATCH}")
    print(f"torch threads {torch.get_num_threads()}")
    seconds = {}
    for name, make in (
        ("numpy", numpy_epoch),
        ("pytorch", torch_epoch),
        ("sklearn", sklearn_epoch),
    ):
        seconds[name] = best_time(make(X, y), cfg.repeats)
        print(f"{name:8s} {seconds[name]:.3f} s/epoch")
    ratios = {
        "numpy_vs_pytorch": round(seconds["numpy"] / seconds["pytorch"], 3),
        "sklearn_vs_pytorch": round(seconds["sklearn"] / seconds["pytorch"], 3),
    }
    print(json.dumps({"project": "mlp", "ratios": ratios}))
    return ratios


if __name__ == "__main__":
    cli_main(main, BenchConfig)
