"""Convolution from scratch: NumPy layers with hand-written backward passes, and a small CNN.

Every layer follows one contract (CS231n's): `forward(x)` caches what the backward pass needs
and returns the output; `backward(dout)` takes dL/d(output), stores the parameter gradients in
`layer.grads` (beside `layer.params`, same names) and returns dL/d(input).

Shapes: N batch, C input channels, F filters (output channels), H, W input height and width,
HH, WW kernel height and width, Ho, Wo output height and width.

Only NumPy here; torch appears in the tests, as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, dtype) -> np.ndarray:
    """N(0, 2 / fan_in): keeps the activation variance constant through ReLU layers (He 2015)."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output side of a convolution or pooling: floor((H + 2P - K) / S) + 1."""
    return (size + 2 * pad - kernel) // stride + 1


# ----------------------------------------------------------------------------- convolution


def conv2d_naive(x, w, b, stride=1, pad=0):
    """The definition, one output pixel at a time: y[n,f,i,j] = b[f] + sum_{c,p,q} w[f,c,p,q] *
    x_pad[n, c, i*S + p, j*S + q]. Slow; kept as the readable reference for the fast version."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = out_size(H, HH, stride, pad), out_size(W, WW, stride, pad)
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.zeros((N, F, Ho, Wo), dtype=np.result_type(x, w))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    patch = x_pad[n, :, i * stride : i * stride + HH, j * stride : j * stride + WW]
                    y[n, f, i, j] = np.sum(patch * w[f]) + b[f]
    return y


def im2col(x_pad, HH, WW, stride):
    """Every receptive field as one row: (N, C, Hp, Wp) -> (N*Ho*Wo, C*HH*WW).

    sliding_window_view makes a zero-copy view of all HH x WW windows; slicing by the stride
    keeps the ones the convolution visits; the reshape copies them into a matrix.
    """
    windows = np.lib.stride_tricks.sliding_window_view(x_pad, (HH, WW), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]  # (N, C, Ho, Wo, HH, WW)
    N, C, Ho, Wo = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * HH * WW)


def col2im(dcols, x_pad_shape, HH, WW, stride, Ho, Wo):
    """The adjoint of im2col: add every row's gradient back onto the pixels it was read from.

    Loops over the HH*WW kernel offsets only; each step adds a strided slice of all pixels.
    """
    N, C = x_pad_shape[:2]
    dcols = dcols.reshape(N, Ho, Wo, C, HH, WW)
    dx_pad = np.zeros(x_pad_shape, dtype=dcols.dtype)
    for p in range(HH):
        for q in range(WW):
            rows = slice(p, p + stride * Ho, stride)
            cols = slice(q, q + stride * Wo, stride)
            dx_pad[:, :, rows, cols] += dcols[:, :, :, :, p, q].transpose(0, 3, 1, 2)
    return dx_pad


class Conv2D:
    """y = W * x + b as one matrix product: (N*Ho*Wo, C*HH*WW) @ (C*HH*WW, F)."""

    def __init__(self, C, F, kernel, stride=1, pad=0, rng=None, dtype=np.float32):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.stride, self.pad = stride, pad
        self.params = {
            "W": he_normal(rng, (F, C, kernel, kernel), C * kernel * kernel, dtype),
            "b": np.zeros(F, dtype=dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):  # x: (N, C, H, W)
        W, b, S, P = self.params["W"], self.params["b"], self.stride, self.pad
        F, _, HH, WW = W.shape
        N, _, H, Wd = x.shape
        Ho, Wo = out_size(H, HH, S, P), out_size(Wd, WW, S, P)
        x_pad = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)))
        cols = im2col(x_pad, HH, WW, S)  # (N*Ho*Wo, C*HH*WW)
        y = cols @ W.reshape(F, -1).T + b  # (N*Ho*Wo, F)
        self.cache = (cols, x_pad.shape, Ho, Wo)
        return y.reshape(N, Ho, Wo, F).transpose(0, 3, 1, 2)  # (N, F, Ho, Wo)

    def backward(self, dout, input_grad=True):  # dout: (N, F, Ho, Wo)
        """input_grad=False (a first layer, whose input is the images) stops after the
        parameter gradients and returns None: autograd skips that product the same way."""
        cols, x_pad_shape, Ho, Wo = self.cache
        W, P = self.params["W"], self.pad
        F, C, HH, WW = W.shape
        dy = dout.transpose(0, 2, 3, 1).reshape(-1, F)  # (N*Ho*Wo, F)
        self.grads["W"][...] = (dy.T @ cols).reshape(W.shape)  # dL/dW = dY^T cols
        self.grads["b"][...] = dy.sum(axis=0)  # dL/db = sum over N, Ho, Wo
        if not input_grad:
            return None
        dcols = dy @ W.reshape(F, -1)  # dL/dcols = dY W, (N*Ho*Wo, C*HH*WW)
        dx_pad = col2im(dcols, x_pad_shape, HH, WW, self.stride, Ho, Wo)
        H, Wd = x_pad_shape[2] - 2 * P, x_pad_shape[3] - 2 * P
        return dx_pad[:, :, P : P + H, P : P + Wd]  # drop the padding's gradient


# ----------------------------------------------------------------------------- pooling


def pool_windows(x, kernel, stride):
    """(N, C, H, W) -> view (N, C, Ho, Wo, K*K) of the pooling windows (no padding)."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    return windows.reshape(*windows.shape[:4], kernel * kernel)


class MaxPool2D:
    """y = max over each K x K window; the gradient flows only to the (first) maximum."""

    def __init__(self, kernel=2, stride=None):
        self.kernel, self.stride = kernel, stride or kernel
        self.params, self.grads = {}, {}

    def forward(self, x):  # x: (N, C, H, W)
        windows = pool_windows(x, self.kernel, self.stride)  # (N, C, Ho, Wo, K*K)
        self.argmax = windows.argmax(axis=-1)  # (N, C, Ho, Wo), first maximum like torch
        self.x_shape = x.shape
        return np.take_along_axis(windows, self.argmax[..., None], axis=-1)[..., 0]

    def backward(self, dout):  # dout: (N, C, Ho, Wo)
        K, S = self.kernel, self.stride
        Ho, Wo = dout.shape[2:]
        dx = np.zeros(self.x_shape, dtype=dout.dtype)
        for p in range(K):  # loop over the K*K window offsets, not over pixels
            for q in range(K):
                winner = self.argmax == p * K + q
                dx[:, :, p : p + S * Ho : S, q : q + S * Wo : S] += dout * winner
        return dx


class AvgPool2D:
    """y = mean over each K x K window; each input in a window gets dout / K^2."""

    def __init__(self, kernel=2, stride=None):
        self.kernel, self.stride = kernel, stride or kernel
        self.params, self.grads = {}, {}

    def forward(self, x):  # x: (N, C, H, W)
        self.x_shape = x.shape
        return pool_windows(x, self.kernel, self.stride).mean(axis=-1)

    def backward(self, dout):  # dout: (N, C, Ho, Wo)
        K, S = self.kernel, self.stride
        Ho, Wo = dout.shape[2:]
        dx = np.zeros(self.x_shape, dtype=dout.dtype)
        for p in range(K):
            for q in range(K):
                dx[:, :, p : p + S * Ho : S, q : q + S * Wo : S] += dout / (K * K)
        return dx


# ----------------------------------------------------------------------------- the rest


class BatchNorm2d:
    """Per channel: x_hat = (x - mu_B) / sqrt(var_B + eps), y = gamma x_hat + beta (Ioffe 2015).

    Training uses the batch statistics over (N, H, W) and updates running averages (with the
    unbiased variance, like torch); evaluation uses the running averages.
    """

    def __init__(self, C, momentum=0.1, eps=1e-5, dtype=np.float32):
        self.momentum, self.eps, self.training = momentum, eps, True
        self.params = {"gamma": np.ones(C, dtype=dtype), "beta": np.zeros(C, dtype=dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.running_mean = np.zeros(C, dtype=dtype)
        self.running_var = np.ones(C, dtype=dtype)

    def forward(self, x):  # x: (N, C, H, W)
        gamma = self.params["gamma"][None, :, None, None]
        beta = self.params["beta"][None, :, None, None]
        if not self.training:  # the running statistics are constants: y is affine in x
            inv_std = 1.0 / np.sqrt(self.running_var + self.eps)  # (C,)
            x_hat = (x - self.running_mean[None, :, None, None]) * inv_std[None, :, None, None]
            self.cache = (x_hat, inv_std, None)
            return gamma * x_hat + beta
        mean = x.mean(axis=(0, 2, 3))  # (C,)
        var = x.var(axis=(0, 2, 3))  # biased, as used for normalising
        M = x.size // x.shape[1]  # values per channel: N*H*W
        m = self.momentum
        self.running_mean[...] = (1 - m) * self.running_mean + m * mean
        self.running_var[...] = (1 - m) * self.running_var + m * var * M / max(M - 1, 1)
        inv_std = 1.0 / np.sqrt(var + self.eps)  # (C,)
        x_hat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]
        self.cache = (x_hat, inv_std, M)
        return gamma * x_hat + beta

    def backward(self, dout):  # dout: (N, C, H, W)
        x_hat, inv_std, M = self.cache
        self.grads["gamma"][...] = (dout * x_hat).sum(axis=(0, 2, 3))
        self.grads["beta"][...] = dout.sum(axis=(0, 2, 3))
        dx_hat = dout * self.params["gamma"][None, :, None, None]
        if M is None:  # evaluation: dL/dx = gamma / sqrt(running_var + eps) * dL/dy
            return dx_hat * inv_std[None, :, None, None]
        # dL/dx = inv_std / M (M dx_hat - sum dx_hat - x_hat sum(dx_hat x_hat)), see README
        sum_dx_hat = dx_hat.sum(axis=(0, 2, 3), keepdims=True)
        sum_dx_hat_x_hat = (dx_hat * x_hat).sum(axis=(0, 2, 3), keepdims=True)
        scale = inv_std[None, :, None, None] / M
        return scale * (M * dx_hat - sum_dx_hat - x_hat * sum_dx_hat_x_hat)


class ReLU:
    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.mask = x > 0
        return x * self.mask  # max(0, x)

    def backward(self, dout):
        return dout * self.mask  # 1[x > 0]


class Dropout:
    """Inverted dropout: keep each unit with probability 1 - p and scale it by 1 / (1 - p),
    so that evaluation (no dropout) needs no rescaling."""

    def __init__(self, p=0.5, rng=None):
        self.p, self.training = p, True
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.params, self.grads = {}, {}

    def forward(self, x):
        if not self.training or self.p == 0:
            self.mask = None
            return x
        if self.p == 1:  # every unit dropped: zeros, as torch gives (1/(1-p) would be 0/0)
            self.mask = np.zeros_like(x)
            return self.mask.copy()
        keep = self.rng.random(x.shape) >= self.p
        self.mask = keep.astype(x.dtype) / (1 - self.p)
        return x * self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask


class Flatten:
    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):  # (N, C, H, W) -> (N, C*H*W)
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.x_shape)


class Dense:
    def __init__(self, n_in, n_out, rng=None, dtype=np.float32):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.params = {
            "W": he_normal(rng, (n_in, n_out), n_in, dtype),
            "b": np.zeros(n_out, dtype=dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):  # x: (N, n_in)
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):  # dout: (N, n_out)
        self.grads["W"][...] = self.x.T @ dout  # dL/dW = x^T dL/dy
        self.grads["b"][...] = dout.sum(axis=0)
        return dout @ self.params["W"].T  # dL/dx


def softmax_cross_entropy(logits, y):
    """Mean of -log softmax(logits)[y], and its gradient (softmax - onehot(y)) / N."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # same softmax, no overflow
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    N = logits.shape[0]
    loss = -log_probs[np.arange(N), y].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(N), y] -= 1
    return loss, dlogits / N


# ----------------------------------------------------------------------------- optimizers


def copy_arrays(targets: dict, saved: dict, what: str) -> None:
    """Copy saved arrays into `targets` in place (the optimizers and the layers hold references
    to them); ValueError naming the entries that are missing or have another shape."""
    problems = [
        name
        for name, target in targets.items()
        if name not in saved or np.shape(saved[name]) != target.shape
    ]
    if problems:
        raise ValueError(f"{what} entries missing or of another shape: {', '.join(problems[:3])}")
    for name, target in targets.items():
        target[...] = saved[name]


class SGD:
    """Momentum SGD as torch.optim.SGD: v = mu v + g (+ wd p), p = p - lr v."""

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0):
        self.params, self.lr, self.momentum, self.weight_decay = params, lr, momentum, weight_decay
        self.state = {name: np.zeros_like(p) for name, (p, _) in params.items()}

    def state_dict(self):
        return {"state": self.state}

    def load_state_dict(self, saved):
        copy_arrays(self.state, saved["state"], "SGD momentum")

    def step(self):
        for name, (p, g) in self.params.items():
            g = g + self.weight_decay * p
            v = self.state[name]
            v[...] = self.momentum * v + g
            p -= self.lr * v


class Adam:
    """Adam (Kingma & Ba 2015): m, v are running means of g and g^2, bias-corrected."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.weight_decay, self.t = weight_decay, 0
        self.state = {}
        for name, (p, _) in params.items():
            self.state[name + ".m"] = np.zeros_like(p)
            self.state[name + ".v"] = np.zeros_like(p)

    def state_dict(self):
        return {"state": self.state, "t": self.t}  # t: the step count of the bias correction

    def load_state_dict(self, saved):
        copy_arrays(self.state, saved["state"], "Adam moment")
        self.t = int(saved["t"])

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for name, (p, g) in self.params.items():
            g = g + self.weight_decay * p
            m, v = self.state[name + ".m"], self.state[name + ".v"]
            m[...] = b1 * m + (1 - b1) * g  # m_t = b1 m + (1 - b1) g
            v[...] = b2 * v + (1 - b2) * g * g  # v_t = b2 v + (1 - b2) g^2
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


# ----------------------------------------------------------------------------- the CNN


@dataclass
class NumpyCNNConfig:
    in_channels: int = 1
    image_size: int = 16
    num_classes: int = 10
    channels: tuple[int, int] = (16, 32)
    kernel: int = 3
    hidden: int = 64
    dropout: float = 0.25
    batchnorm: bool = True


def feature_side(cfg: NumpyCNNConfig) -> int:
    """The side of the last pooled feature map: each stage is a conv with padding kernel // 2
    ("same" for odd kernels; an even kernel grows the side by one), then a 2x2 max pool."""
    side = cfg.image_size
    for _ in cfg.channels:
        side = out_size(out_size(side, cfg.kernel, 1, cfg.kernel // 2), 2, 2, 0)
    return side


def count_parameters(cfg: NumpyCNNConfig) -> int:
    """Weights and biases of NumpyCNN(cfg), without building it (for the memory estimate)."""
    c1, c2 = cfg.channels
    k2 = cfg.kernel**2
    convs = c1 * (cfg.in_channels * k2 + 1) + c2 * (c1 * k2 + 1)
    norms = 2 * (c1 + c2) if cfg.batchnorm else 0
    n_flat = c2 * feature_side(cfg) ** 2
    return convs + norms + cfg.hidden * (n_flat + 1) + cfg.num_classes * (cfg.hidden + 1)


class NumpyCNN:
    """conv-[bn]-relu-maxpool, conv-[bn]-relu-maxpool, flatten, dropout, dense-relu, dense."""

    def __init__(self, cfg: NumpyCNNConfig, rng=None, dtype=np.float32):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.cfg = cfg
        c1, c2 = cfg.channels
        side = feature_side(cfg)
        if side < 1:
            raise ValueError(f"images of side {cfg.image_size} vanish after two conv-pool stages")
        layers = []
        for c_in, c_out in ((cfg.in_channels, c1), (c1, c2)):
            layers.append(Conv2D(c_in, c_out, cfg.kernel, 1, cfg.kernel // 2, rng, dtype))
            if cfg.batchnorm:
                layers.append(BatchNorm2d(c_out, dtype=dtype))
            layers += [ReLU(), MaxPool2D(2)]
        n_flat = c2 * side * side  # (N, c2, side, side) flattened
        layers += [
            Flatten(),
            Dropout(cfg.dropout, rng),
            Dense(n_flat, cfg.hidden, rng, dtype),
            ReLU(),
            Dense(cfg.hidden, cfg.num_classes, rng, dtype),
        ]
        self.layers = layers

    def train(self, mode=True):
        for layer in self.layers:
            if hasattr(layer, "training"):
                layer.training = mode
        return self

    def forward(self, x):  # x: (N, C, H, W) -> logits (N, num_classes)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dlogits, input_grad=True):
        """Gradients of every parameter; returns dL/dx, or None with input_grad=False (training
        never uses the images' gradient, and the first layer's col2im is the costliest step)."""
        first, *rest = self.layers
        for layer in reversed(rest):
            dlogits = layer.backward(dlogits)
        return first.backward(dlogits, input_grad=input_grad)

    def parameters(self):
        """{'3.W': (param, grad), ...}: layer index and name, for optimizers and checkpoints."""
        return {
            f"{i}.{name}": (p, layer.grads[name])
            for i, layer in enumerate(self.layers)
            for name, p in layer.params.items()
        }

    def buffers(self):
        """Running statistics of the batch norms (state that is not trained by gradients)."""
        out = {}
        for i, layer in enumerate(self.layers):
            if isinstance(layer, BatchNorm2d):
                out[f"{i}.running_mean"] = layer.running_mean
                out[f"{i}.running_var"] = layer.running_var
        return out

    def state_dict(self):
        state = {name: p for name, (p, _) in self.parameters().items()}
        return {**state, **self.buffers()}

    def load_state_dict(self, state):
        """Copy arrays in place; ValueError naming what is missing or has another shape."""
        targets = {n: p for n, (p, _) in self.parameters().items()} | self.buffers()
        copy_arrays(targets, state, "model")

    def predict_logits(self, x, batch=512):  # x: (N, C, H, W) -> (N, num_classes), eval mode
        self.train(False)
        return np.concatenate([self.forward(x[i : i + batch]) for i in range(0, len(x), batch)])

    def first_layer_filters(self):
        return self.layers[0].params["W"]  # (F, C, K, K)

    def feature_maps(self, x):
        """Activations after the first conv block's ReLU, for one batch: (N, F, H, W)."""
        for layer in self.layers:
            x = layer.forward(x)
            if isinstance(layer, ReLU):
                return x
        raise AssertionError("the network has no ReLU")
