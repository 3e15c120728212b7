"""Optimizers and learning-rate schedules, written out as their update rules.

An optimizer holds the model's (value, gradient) pairs and, on `step()`, updates every value in
place from its gradient. Each update rule is the one torch.optim implements (the tests check
them to 1e-10), written for one parameter p with gradient g at step t = 1, 2, ...
"""

from __future__ import annotations

import math

import numpy as np

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


class Optimizer:
    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.params = list(params)  # [(value, gradient), ...]
        self.lr = lr
        self.weight_decay = weight_decay
        self.state = [{} for _ in self.params]  # per-parameter buffers (velocity, moments)
        self.t = 0

    def step(self) -> None:
        self.t += 1
        for (p, g), state in zip(self.params, self.state):
            if self.weight_decay:
                g = g + self.weight_decay * p  # L2: the gradient of (wd / 2) ||p||^2
            self.update(p, g, state)

    def update(self, p, g, state) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        arrays = {f"{i}.{k}": v for i, s in enumerate(self.state) for k, v in s.items()}
        arrays["t"] = np.array(self.t)
        return arrays

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        self.t = int(arrays["t"])
        for name, value in arrays.items():
            if name != "t":
                i, key = name.split(".", 1)
                self.state[int(i)][key] = value.copy()


class SGD(Optimizer):
    """Plain:     p <- p - lr g
    Momentum:  v <- mu v + g;            p <- p - lr v   (v = g at the first step)
    Nesterov:  v <- mu v + g;            p <- p - lr (g + mu v)   (look ahead along v)
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.momentum = momentum
        self.nesterov = nesterov

    def update(self, p, g, state):
        if self.momentum:
            if "v" not in state:
                state["v"] = g.copy()
            else:
                state["v"] *= self.momentum
                state["v"] += g
            g = g + self.momentum * state["v"] if self.nesterov else state["v"]
        p -= self.lr * g


class RMSProp(Optimizer):
    """s <- alpha s + (1 - alpha) g^2;   p <- p - lr g / (sqrt(s) + eps)  (Hinton, 2012).

    Dividing by the running root-mean-square gives every parameter its own step size.
    """

    def __init__(self, params, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.alpha = alpha
        self.eps = eps

    def update(self, p, g, state):
        s = state.setdefault("s", np.zeros_like(p))
        s *= self.alpha
        s += (1 - self.alpha) * g * g
        p -= self.lr * g / (np.sqrt(s) + self.eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015): momentum and RMSProp, both bias-corrected.

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t);   v_hat = v / (1 - b2^t)   (the moments start at 0: undo that bias)
    p <- p - lr m_hat / (sqrt(v_hat) + eps)
    weight_decay here is L2 added to g, as in torch.optim.Adam; see AdamW for the decoupled kind.
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.b1, self.b2 = betas
        self.eps = eps

    def update(self, p, g, state):
        m = state.setdefault("m", np.zeros_like(p))
        v = state.setdefault("v", np.zeros_like(p))
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * g * g
        m_hat = m / (1 - self.b1**self.t)
        v_hat = v / (1 - self.b2**self.t)
        p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): p <- p (1 - lr wd), then
    the Adam step on the raw gradient, so the decay is not rescaled by 1 / sqrt(v_hat)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps)
        self.decoupled_decay = weight_decay

    def update(self, p, g, state):
        p *= 1 - self.lr * self.decoupled_decay
        super().update(p, g, state)


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0) -> Optimizer:
    """The optimizers by name, with the usual momentum 0.9."""
    if name == "sgd":
        return SGD(params, lr, weight_decay=weight_decay)
    if name == "momentum":
        return SGD(params, lr, momentum=0.9, weight_decay=weight_decay)
    if name == "nesterov":
        return SGD(params, lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "rmsprop":
        return RMSProp(params, lr, weight_decay=weight_decay)
    if name == "adam":
        return Adam(params, lr, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(params, lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate at the start of `epoch` (0-based).

    step:   halve every third of the run, as in StepLR(step_size=epochs // 3, gamma=0.5)
    cosine: 0.5 (1 + cos(pi epoch / epochs)), from 1 down towards 0 (Loshchilov & Hutter, 2017)
    """
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.5 ** (epoch // max(epochs // 3, 1))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
