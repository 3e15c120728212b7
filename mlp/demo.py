"""Backprop by hand, one step, on XOR: every intermediate of a 2 -> 2 -> 1 network printed.

    python demo.py

The network is z1 = X W1 + b1, h = sigmoid(z1), z2 = h W2 + b2, p = sigmoid(z2), with the
binary cross-entropy L = -mean[y log p + (1 - y) log(1 - p)]. The backward pass below is the
chain rule written out line by line, in the reverse order of the forward pass; the test
tests/test_demo.py checks every number against torch autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.cli import arg, cli_main

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (4, 2): the four XOR inputs
Y = np.array([[0.0], [1.0], [1.0], [0.0]])  # (4, 1): x1 xor x2


def initial_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.standard_normal((2, 2)),
        "b1": np.zeros(2),
        "W2": rng.standard_normal((2, 1)),
        "b2": np.zeros(1),
    }


def backprop_step(w: dict[str, np.ndarray], lr: float) -> dict[str, np.ndarray]:
    """One forward pass, one backward pass and one SGD step; returns every intermediate."""
    n = len(X)
    # forward
    z1 = X @ w["W1"] + w["b1"]  # (4, 2) pre-activations of the hidden layer
    h = 1 / (1 + np.exp(-z1))  # (4, 2) hidden activations
    z2 = h @ w["W2"] + w["b2"]  # (4, 1) output logit
    p = 1 / (1 + np.exp(-z2))  # (4, 1) predicted probability of 1
    loss = -np.mean(Y * np.log(p) + (1 - Y) * np.log(1 - p))
    # backward: each line is dL/d(something) from the line below it in the forward pass
    dz2 = (p - Y) / n  # sigmoid and cross-entropy together: dL/dz2 = (p - y) / N
    dW2 = h.T @ dz2  # z2 = h W2 + b2  =>  dL/dW2 = h^T dL/dz2
    db2 = dz2.sum(axis=0)
    dh = dz2 @ w["W2"].T  # dL/dh = dL/dz2 W2^T
    dz1 = dh * h * (1 - h)  # sigmoid'(z1) = h (1 - h)
    dW1 = X.T @ dz1
    db1 = dz1.sum(axis=0)
    grads = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
    updated = {k: w[k] - lr * grads[k] for k in w}  # plain gradient descent
    return {
        "z1": z1, "h": h, "z2": z2, "p": p, "loss": np.array(loss),
        "dL/dz2": dz2, "dL/dW2": dW2, "dL/db2": db2, "dL/dh": dh, "dL/dz1": dz1,
        "dL/dW1": dW1, "dL/db1": db1,
        **{f"new {k}": v for k, v in updated.items()},
    }  # fmt: skip


@dataclass
class DemoConfig:
    seed: int = arg(0, "seed of the initial weights", min=0)
    lr: float = arg(1.0, "learning rate of the one SGD step", min=0, min_inclusive=False)


def main(cfg: DemoConfig) -> None:
    weights = initial_weights(cfg.seed)
    np.set_printoptions(precision=4, suppress=True)
    for name, value in weights.items():
        print(f"{name} =\n{value}\n")
    for name, value in backprop_step(weights, cfg.lr).items():
        print(f"{name} =\n{value}\n")


if __name__ == "__main__":
    cli_main(main, DemoConfig)
