"""A multi-layer perceptron in NumPy, every gradient written by hand.

Each layer follows CS231n's pattern: `forward(x)` caches what the backward pass needs,
`backward(dout)` takes dL/d(output), stores the parameter gradients beside the parameters
(`W` and `dW`) and returns dL/d(input). A network is a list of layers; backprop is the chain
rule applied to that list in reverse:

    model = MLP([Dense(2, 32, rng), ReLU(), Dense(32, 3, rng)])
    logits = model.forward(x)                   # (N, 3)
    loss, dlogits = SoftmaxCrossEntropy()(logits, y)
    model.backward(dlogits)                     # fills every dW, db

Letters used in shape comments: N = batch size, D = input features, H = output features.
Everything works in float64 (for the gradient checks) or float32 (for speed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- initialisation

INITS = ("zeros", "small", "xavier", "he")


def init_weight(kind: str, n_in: int, n_out: int, rng: np.random.Generator) -> np.ndarray:
    """A (n_in, n_out) weight matrix.

    zeros:  every unit computes the same thing and gets the same gradient, forever (symmetry).
    small:  N(0, 0.01^2); breaks symmetry, but signals shrink layer after layer in deep nets.
    xavier: N(0, 2 / (n_in + n_out)), keeps the variance of activations and gradients equal
            through tanh/sigmoid layers (Glorot & Bengio, 2010).
    he:     N(0, 2 / n_in), the same for ReLU, which zeroes half its inputs (He et al., 2015).
    """
    if kind == "zeros":
        return np.zeros((n_in, n_out))
    if kind == "small":
        return 0.01 * rng.standard_normal((n_in, n_out))
    if kind == "xavier":
        return math.sqrt(2.0 / (n_in + n_out)) * rng.standard_normal((n_in, n_out))
    if kind == "he":
        return math.sqrt(2.0 / n_in) * rng.standard_normal((n_in, n_out))
    raise ValueError(f"unknown init {kind!r} (choose from {', '.join(INITS)})")


# ----------------------------------------------------------------------------- layers


class Layer:
    """A layer without parameters; layers with parameters list them in `params`/`grads`."""

    training = True

    def params(self) -> dict[str, np.ndarray]:
        return {}

    def grads(self) -> dict[str, np.ndarray]:
        return {}

    def buffers(self) -> dict[str, np.ndarray]:  # state that is saved but not learned
        return {}


class Dense(Layer):
    """y = x W + b."""

    def __init__(self, n_in: int, n_out: int, rng=None, init: str = "he", dtype=np.float64):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.W = init_weight(init, n_in, n_out, rng).astype(dtype)  # (D, H)
        self.b = np.zeros(n_out, dtype=dtype)  # (H,)
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros_like(self.b)

    def params(self):
        return {"W": self.W, "b": self.b}

    def grads(self):
        return {"W": self.dW, "b": self.db}

    def forward(self, x):  # x: (N, D)
        self.x = x
        return x @ self.W + self.b  # (N, H)

    def backward(self, dout):  # dout: dL/dy, (N, H)
        self.dW[...] = self.x.T @ dout  # dL/dW = x^T dL/dy, (D, H)
        self.db[...] = dout.sum(axis=0)  # dL/db = sum over the batch of dL/dy
        return dout @ self.W.T  # dL/dx = dL/dy W^T, (N, D)


class ReLU(Layer):
    """y = max(0, x); dy/dx = 1 where x > 0, else 0."""

    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class LeakyReLU(Layer):
    """y = x if x > 0 else slope * x, so negative units still pass a little gradient."""

    def __init__(self, slope: float = 0.01):
        self.slope = slope

    def forward(self, x):
        self.scale = np.where(x > 0, 1.0, self.slope).astype(x.dtype)
        return x * self.scale

    def backward(self, dout):
        return dout * self.scale


def sigmoid(x):
    """1 / (1 + e^-x), computed without overflow for large |x|."""
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class Sigmoid(Layer):
    """y = sigma(x); dy/dx = y (1 - y)."""

    def forward(self, x):
        self.y = sigmoid(x)
        return self.y

    def backward(self, dout):
        return dout * self.y * (1.0 - self.y)


class Tanh(Layer):
    """y = tanh(x); dy/dx = 1 - y^2."""

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, dout):
        return dout * (1.0 - self.y**2)


class GELU(Layer):
    """GELU(x) = x Phi(x), with the tanh approximation of Hendrycks & Gimpel (2016):

    y = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
    dy/dx = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    """

    c = math.sqrt(2.0 / math.pi)

    def forward(self, x):
        self.x = x
        self.t = np.tanh(self.c * (x + 0.044715 * x**3))
        return 0.5 * x * (1.0 + self.t)

    def backward(self, dout):
        x, t = self.x, self.t
        du_dx = self.c * (1.0 + 3 * 0.044715 * x**2)
        return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * du_dx)


def log_softmax(z):
    """log p_i = z_i - log sum_j e^{z_j}, with the max subtracted first (log-sum-exp)."""
    z = z - z.max(axis=1, keepdims=True)  # e^z now <= 1: no overflow even at z = 1e4
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class Softmax(Layer):
    """p_i = e^{z_i} / sum_j e^{z_j} over the last axis.

    Its Jacobian is dp_i/dz_j = p_i (delta_ij - p_j), so the vector-Jacobian product is
    dL/dz = p * (dL/dp - sum_j dL/dp_j p_j), without building the (C, C) matrix.
    """

    def forward(self, z):  # z: (N, C)
        self.p = np.exp(log_softmax(z))
        return self.p

    def backward(self, dout):  # dout: dL/dp, (N, C)
        return self.p * (dout - (dout * self.p).sum(axis=1, keepdims=True))


class Dropout(Layer):
    """Inverted dropout: zero each unit with probability p, scale survivors by 1/(1-p).

    The scaling keeps E[y] = x during training, so evaluation is the identity.
    """

    def __init__(self, p: float = 0.5, rng=None):
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def forward(self, x):
        if not self.training or self.p == 0:
            self.mask = None
            return x
        if self.p == 1:  # every unit dropped: zeros, as torch gives (1/(1-p) would be 0/0)
            self.mask = np.zeros_like(x)
            return self.mask.copy()
        keep = self.rng.random(x.shape) >= self.p
        self.mask = (keep / (1.0 - self.p)).astype(x.dtype)
        return x * self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask


class BatchNorm1d(Layer):
    """Batch normalisation over the batch axis (Ioffe & Szegedy, 2015), as torch.nn.BatchNorm1d.

    Training:   x_hat = (x - mu_B) / sqrt(var_B + eps),  y = gamma x_hat + beta,
                running stats <- (1 - momentum) running + momentum * batch stats
                (the running variance uses the unbiased batch variance, as torch does).
    Evaluation: the running statistics replace the batch ones, so y depends on x alone and
                dL/dx = gamma / sqrt(running_var + eps) * dL/dy (the statistics are constants).
    A training batch of one has no variance to normalise by: like torch, it is refused.
    """

    def __init__(self, n: int, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float64):
        self.eps = eps
        self.momentum = momentum
        self.gamma = np.ones(n, dtype=dtype)
        self.beta = np.zeros(n, dtype=dtype)
        self.dgamma = np.zeros_like(self.gamma)
        self.dbeta = np.zeros_like(self.beta)
        self.running_mean = np.zeros(n, dtype=dtype)
        self.running_var = np.ones(n, dtype=dtype)

    def params(self):
        return {"gamma": self.gamma, "beta": self.beta}

    def grads(self):
        return {"gamma": self.dgamma, "beta": self.dbeta}

    def buffers(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def forward(self, x):  # x: (N, D)
        if not self.training:
            self.batch_statistics = False
            self.inv_std = 1.0 / np.sqrt(self.running_var + self.eps)  # (D,)
            self.x_hat = (x - self.running_mean) * self.inv_std
            return self.gamma * self.x_hat + self.beta
        n = x.shape[0]
        if n < 2:
            raise ValueError("BatchNorm1d needs more than one sample per training batch")
        self.batch_statistics = True
        mu = x.mean(axis=0)  # (D,)
        var = x.var(axis=0)  # (D,), biased: it is what normalises the batch
        self.inv_std = 1.0 / np.sqrt(var + self.eps)
        self.x_hat = (x - mu) * self.inv_std  # (N, D)
        m = self.momentum
        self.running_mean[...] = (1 - m) * self.running_mean + m * mu
        self.running_var[...] = (1 - m) * self.running_var + m * var * n / max(n - 1, 1)
        return self.gamma * self.x_hat + self.beta

    def backward(self, dout):  # dout: (N, D)
        self.dgamma[...] = (dout * self.x_hat).sum(axis=0)
        self.dbeta[...] = dout.sum(axis=0)
        g = dout * self.gamma
        if not self.batch_statistics:  # evaluation: an affine map of x
            return g * self.inv_std
        # mu and var depend on every x in the batch; collecting the three paths gives
        # dL/dx = inv_std / N * (N g - sum(g) - x_hat * sum(g * x_hat)),  g = gamma * dL/dy
        n = dout.shape[0]
        return (
            self.inv_std / n * (n * g - g.sum(axis=0) - self.x_hat * (g * self.x_hat).sum(axis=0))
        )


ACTIVATIONS = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "gelu": GELU,
}


# ----------------------------------------------------------------------------- losses
# A loss is called as loss, dlogits = loss_fn(output, target): the value, averaged over the
# batch, and its gradient with respect to the network's output.


class MSELoss:
    """L = mean over all entries of (y - t)^2;  dL/dy = 2 (y - t) / (number of entries)."""

    def __call__(self, y, t):  # y, t: (N, K)
        diff = y - t.reshape(y.shape)
        return float((diff**2).mean()), 2.0 * diff / diff.size


class BCEWithLogitsLoss:
    """Binary cross-entropy on logits z, the sigmoid folded in for stability; K independent
    binary outputs per sample are averaged over all N * K entries, as torch's mean reduction.

    L = -[t log sigma(z) + (1 - t) log(1 - sigma(z))] = max(z, 0) - t z + log(1 + e^-|z|)
    dL/dz = (sigma(z) - t) / (N K)
    """

    def __call__(self, z, t):  # z: (N, K) logits, t: (N, K) in {0, 1} ((N,) when K = 1)
        t = t.reshape(z.shape).astype(z.dtype)
        loss = np.maximum(z, 0) - t * z + np.log1p(np.exp(-np.abs(z)))
        return float(loss.mean()), (sigmoid(z) - t) / z.size


class SoftmaxCrossEntropy:
    """Softmax followed by the negative log-likelihood of the true class, fused.

    L = -mean_n log p_{n, y_n},  p = softmax(z)
    dL/dz = (p - onehot(y)) / N: the whole softmax Jacobian collapses to this difference.
    """

    def __call__(self, z, y):  # z: (N, C) logits, y: (N,) int class indices
        n = z.shape[0]
        logp = log_softmax(z)  # (N, C), finite for any finite z
        loss = -logp[np.arange(n), y].mean()
        dz = np.exp(logp)
        dz[np.arange(n), y] -= 1.0
        return float(loss), dz / n


# ----------------------------------------------------------------------------- the network


class MLP:
    """Layers applied in order; backward runs the chain rule through them in reverse."""

    def __init__(self, layers: list):
        self.layers = layers

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout  # dL/d(input)

    def train(self):
        for layer in self.layers:
            layer.training = True

    def eval(self):
        for layer in self.layers:
            layer.training = False

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(value, gradient) pairs; optimizers update the values in place."""
        return [
            (layer.params()[k], layer.grads()[k]) for layer in self.layers for k in layer.params()
        ]

    def flat_parameters(self) -> np.ndarray:
        """Every learned value in one vector (P,), in the order of `parameters()` (a copy)."""
        return np.concatenate([p.ravel() for p, _ in self.parameters()])

    def set_flat_parameters(self, theta: np.ndarray) -> None:
        """The inverse of `flat_parameters`: write theta (P,) back into the layers, in place."""
        params = [p for p, _ in self.parameters()]
        if theta.shape != (sum(p.size for p in params),):
            raise ValueError(f"expected {sum(p.size for p in params)} values, got {theta.shape}")
        offset = 0
        for p in params:
            p[...] = theta[offset : offset + p.size].reshape(p.shape)  # in place, as optimizers
            offset += p.size

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {}
        for i, layer in enumerate(self.layers):
            for name, value in {**layer.params(), **layer.buffers()}.items():
                state[f"{i}.{name}"] = value
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"missing {missing}, unexpected {unexpected}")
        for name, value in own.items():
            if state[name].shape != value.shape:
                raise ValueError(f"{name}: shape {state[name].shape} vs {value.shape}")
            value[...] = state[name]  # in place: optimizers hold references to these arrays


@dataclass
class ModelConfig:
    n_in: int = 2
    hidden: tuple[int, ...] = (64, 64)  # () gives a single layer: logistic/softmax regression
    n_out: int = 3
    activation: str = "relu"
    init: str = "he"
    dropout: float = 0.0
    batchnorm: bool = False


def build_mlp(cfg: ModelConfig, rng: np.random.Generator, dtype=np.float64) -> MLP:
    """Dense -> [BatchNorm] -> activation -> [Dropout] per hidden layer, then a Dense output."""
    layers = []
    sizes = [cfg.n_in, *cfg.hidden]
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers.append(Dense(n_in, n_out, rng, cfg.init, dtype))
        if cfg.batchnorm:
            layers.append(BatchNorm1d(n_out, dtype=dtype))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout > 0:
            layers.append(Dropout(cfg.dropout, rng))
    layers.append(Dense(sizes[-1], cfg.n_out, rng, cfg.init, dtype))
    return MLP(layers)


def predict(model: MLP, x, task: str):
    """Class probabilities (N, C) for classification, values (N, 1) for regression."""
    out = model.forward(x)
    if task == "binary":  # one logit z: p(class 1) = sigma(z)
        p1 = sigmoid(out[:, 0])
        return np.stack([1.0 - p1, p1], axis=1)
    if task == "multiclass":
        return np.exp(log_softmax(out))
    return out
