"""Vanilla RNN, LSTM and GRU in NumPy, with backpropagation through time written out by hand.

Every layer follows one pattern: `forward` computes and caches what the backward pass needs,
`backward` takes dL/d(output), stores the parameter gradients beside the parameters (`dW_ih`
next to `W_ih`) and returns dL/d(input). The recurrent weights use PyTorch's layout and gate
order, so the tests can copy them into `torch.nn.RNN`/`LSTM`/`GRU` and compare every number.

Shapes: B = batch, T = time steps, V = vocabulary, E = embedding width, H = hidden width,
G = gates per cell (RNN 1, GRU 3, LSTM 4). Inside the recurrent layer arrays are time-major,
(T, B, ...), so that each step reads one contiguous slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import CheckpointError
from shared.state import read_state

CELLS = ("rnn", "lstm", "gru")


@dataclass
class ModelConfig:
    vocab_size: int = 96  # V, characters in the vocabulary
    cell: str = "lstm"  # rnn, lstm or gru
    n_embd: int = 64  # E, width of the character embedding
    hidden: int = 256  # H, width of every recurrent layer
    n_layer: int = 1  # recurrent layers stacked on top of each other
    dtype: str = "float32"  # float64 in the tests, float32 (twice as fast) for training
    dropout: float = 0.0  # on every non-recurrent connection, in training only


def sigmoid(x):
    """1 / (1 + e^-x), computed as (1 + tanh(x / 2)) / 2: the same function, never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# ----------------------------------------------------------------------------- input and output


class Embedding:
    """A lookup table: row v of W is the vector of character v (one-hot input times W)."""

    def __init__(self, n_vocab: int, n_embd: int, rng: np.random.Generator):
        self.W = rng.standard_normal((n_vocab, n_embd))  # (V, E), N(0, 1) as in torch
        self.dW = np.zeros_like(self.W)

    def forward(self, idx):  # idx: (B, T) integers
        self.idx = idx
        return self.W[idx]  # (B, T, E)

    def backward(self, dout):  # dout: (B, T, E)
        self.dW[...] = 0
        np.add.at(self.dW, self.idx, dout)  # a character seen k times gets k gradients added

    def params(self):
        return {"W": self.W}

    def grads(self):
        return {"W": self.dW}


class Dense:
    """y = x W^T + b, applied to every time step (W in torch's (out, in) layout)."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator):
        bound = 1.0 / np.sqrt(n_in)  # torch's nn.Linear initialisation
        self.W = rng.uniform(-bound, bound, (n_out, n_in))
        self.b = rng.uniform(-bound, bound, n_out)
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros_like(self.b)

    def forward(self, x):  # x: (N, n_in)
        self.x = x
        return x @ self.W.T + self.b  # (N, n_out)

    def backward(self, dout):  # dout: dL/dy, (N, n_out)
        self.dW[...] = dout.T @ self.x  # dL/dW = dL/dy^T x
        self.db[...] = dout.sum(axis=0)
        return dout @ self.W  # dL/dx, (N, n_in)

    def params(self):
        return {"W": self.W, "b": self.b}

    def grads(self):
        return {"W": self.dW, "b": self.db}


class Dropout:
    """Inverted dropout (Srivastava et al., 2014): y = x * m / (1 - p), m_j ~ Bernoulli(1 - p).

    Dividing by 1 - p keeps E[y] = x, so evaluation simply skips the layer. Applied to the
    non-recurrent connections only, never to h_{t-1} -> h_t (Zaremba et al., 2014): the memory
    carried through time stays intact, only what enters and leaves each layer is thinned.
    """

    def __init__(self, p: float):
        self.p = p

    def forward(self, x, rng):  # x: any shape; rng None (evaluation): the identity
        if rng is None or self.p == 0:
            self.mask = None
            return x
        keep = rng.random(x.shape, dtype=x.dtype) >= self.p
        self.mask = keep.astype(x.dtype) / (1.0 - self.p)  # (same shape as x): 0 or 1/(1-p)
        return x * self.mask

    def backward(self, dout):  # dL/dx = dL/dy * m / (1 - p): the same mask, the same scale
        return dout if self.mask is None else dout * self.mask


def cross_entropy(logits, targets):
    """Mean of -log softmax(logits)[target] over the targets >= 0 (-1 marks padding).

    Returns the loss in nats and dL/dlogits = (softmax - one_hot) / n, zero on padding.
    """
    keep = targets >= 0  # (N,)
    n = max(int(keep.sum()), 1)
    shifted = logits - logits.max(axis=1, keepdims=True)  # same softmax, no overflow
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, V)
    rows = np.flatnonzero(keep)
    loss = -log_probs[rows, targets[rows]].sum() / n
    dlogits = np.exp(log_probs)
    dlogits[rows, targets[rows]] -= 1.0
    dlogits[~keep] = 0.0
    return float(loss), dlogits / n


# ----------------------------------------------------------------------------- recurrent cells
#
# A cell sees x_t only through xw_t = W_ih x_t + b_ih, which the layer computes for all time
# steps in one matrix product before the loop. Its backward returns the gradients of the two
# affine maps it depends on, d(xw_t) and d(hw_t) with hw_t = W_hh h_{t-1} + b_hh, and the
# gradient of the previous state; the layer turns those into the weight gradients after the loop.


class Cell:
    """Weights shared by the three cells: W_ih (G*H, D), W_hh (G*H, H), b_ih, b_hh (G*H,)."""

    n_gates = 1
    n_states = 1  # h only; the LSTM also carries its cell state c

    def __init__(self, n_in: int, n_hidden: int, rng: np.random.Generator):
        gh = self.n_gates * n_hidden
        bound = 1.0 / np.sqrt(n_hidden)  # torch's initialisation: U(-1/sqrt(H), 1/sqrt(H))
        self.n_hidden = n_hidden
        self.W_ih = rng.uniform(-bound, bound, (gh, n_in))
        self.W_hh = rng.uniform(-bound, bound, (gh, n_hidden))
        self.b_ih = rng.uniform(-bound, bound, gh)
        self.b_hh = rng.uniform(-bound, bound, gh)
        self.dW_ih, self.dW_hh = np.zeros_like(self.W_ih), np.zeros_like(self.W_hh)
        self.db_ih, self.db_hh = np.zeros_like(self.b_ih), np.zeros_like(self.b_hh)

    def initial_state(self, batch: int, dtype) -> tuple:
        return tuple(np.zeros((batch, self.n_hidden), dtype) for _ in range(self.n_states))

    def params(self):
        return {"W_ih": self.W_ih, "W_hh": self.W_hh, "b_ih": self.b_ih, "b_hh": self.b_hh}

    def grads(self):
        return {"W_ih": self.dW_ih, "W_hh": self.dW_hh, "b_ih": self.db_ih, "b_hh": self.db_hh}


class RNNCell(Cell):
    """Elman RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    def step(self, xw, state):  # xw: (B, H); state: (h_{t-1},)
        (h_prev,) = state
        h = np.tanh(xw + h_prev @ self.W_hh.T + self.b_hh)  # (B, H)
        return (h,), h

    def step_backward(self, dstate, h):  # dstate: (dL/dh_t,) with every path into h_t summed
        (dh,) = dstate
        da = dh * (1.0 - h * h)  # tanh'(a) = 1 - tanh(a)^2
        return da, da, (da @ self.W_hh,)  # d(xw), d(hw), (dL/dh_{t-1},)


class LSTMCell(Cell):
    """Long short-term memory (Hochreiter & Schmidhuber, 1997), torch's gate order i, f, g, o.

    i, f, o = sigmoid(.), g = tanh(.) of W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, then
    c_t = f * c_{t-1} + i * g  and  h_t = o * tanh(c_t).
    """

    n_gates = 4
    n_states = 2

    def __init__(self, n_in: int, n_hidden: int, rng: np.random.Generator):
        super().__init__(n_in, n_hidden, rng)
        # A forget gate that starts open lets gradients through c from the first step
        # (Jozefowicz et al., 2015); torch leaves it random, so the tests overwrite it anyway.
        self.b_ih[n_hidden : 2 * n_hidden] = 1.0

    def step(self, xw, state):  # xw: (B, 4H); state: (h_{t-1}, c_{t-1}), each (B, H)
        h_prev, c_prev = state
        a = xw + h_prev @ self.W_hh.T + self.b_hh  # (B, 4H) pre-activations
        i, f, g, o = np.split(a, 4, axis=1)  # each (B, H)
        i, f, o, g = sigmoid(i), sigmoid(f), sigmoid(o), np.tanh(g)
        c = f * c_prev + i * g  # the cell state: a gated sum, not a squashing
        tanh_c = np.tanh(c)
        h = o * tanh_c
        return (h, c), (c_prev, i, f, g, o, tanh_c)

    def step_backward(self, dstate, cache):  # dstate: (dL/dh_t, dL/dc_t)
        dh, dc_next = dstate
        c_prev, i, f, g, o, tanh_c = cache
        do = dh * tanh_c
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)  # both paths into c_t
        di, df, dg = dc * g, dc * c_prev, dc * i
        dc_prev = dc * f  # through the forget gate only: no weight matrix, no squashing
        da = np.concatenate(
            [di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g * g), do * o * (1.0 - o)], axis=1
        )  # (B, 4H), sigmoid' = s (1 - s)
        return da, da, (da @ self.W_hh, dc_prev)


class GRUCell(Cell):
    """Gated recurrent unit (Cho et al., 2014) in torch's form, gate order r, z, n.

    r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z), n = tanh(x_n + r * h_n) with
    x_* = W_i* x_t + b_i* and h_* = W_h* h_{t-1} + b_h*, then h_t = (1 - z) * n + z * h_{t-1}.
    The reset gate multiplies h_n *after* its bias, so d(x_n) and d(h_n) differ.
    """

    n_gates = 3

    def step(self, xw, state):  # xw: (B, 3H); state: (h_{t-1},)
        (h_prev,) = state
        hw = h_prev @ self.W_hh.T + self.b_hh  # (B, 3H)
        x_r, x_z, x_n = np.split(xw, 3, axis=1)
        h_r, h_z, h_n = np.split(hw, 3, axis=1)
        r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
        n = np.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * h_prev  # interpolate between the candidate and the old state
        return (h,), (h_prev, h_n, r, z, n)

    def step_backward(self, dstate, cache):
        (dh,) = dstate
        h_prev, h_n, r, z, n = cache
        da_n = dh * (1.0 - z) * (1.0 - n * n)
        da_z = dh * (h_prev - n) * z * (1.0 - z)
        da_r = da_n * h_n * r * (1.0 - r)
        d_xw = np.concatenate([da_r, da_z, da_n], axis=1)  # (B, 3H)
        d_hw = np.concatenate([da_r, da_z, da_n * r], axis=1)
        return d_xw, d_hw, (d_hw @ self.W_hh + dh * z,)  # the z * h_{t-1} path skips W_hh


CELL_TYPES = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


class Recurrent:
    """A cell unrolled over T steps; backward is backpropagation through time (BPTT).

    `forward` starts from a given state (zeros, or the last state of the previous window of a
    long text) and returns the new last state. `backward` accepts dL/d(last state) too; passing
    None cuts the graph there, which is what *truncated* BPTT does between windows.
    """

    def __init__(self, cell: Cell):
        self.cell = cell

    def forward(self, x, state):  # x: (B, T, D); state: tuple of (B, H)
        cell = self.cell
        x = x.transpose(1, 0, 2)  # (T, B, D), time-major
        xw = x @ cell.W_ih.T + cell.b_ih  # (T, B, G*H): the input half of every step at once
        T = x.shape[0]
        hs = np.empty((T, *state[0].shape), dtype=xw.dtype)  # (T, B, H)
        h_prev = np.empty_like(hs)
        caches = []
        for t in range(T):
            h_prev[t] = state[0]
            state, cache = cell.step(xw[t], state)
            hs[t] = state[0]
            caches.append(cache)
        self.cache = (x, h_prev, caches)
        return hs.transpose(1, 0, 2), state  # (B, T, H), last state

    def backward(self, dhs, dstate=None):  # dhs: dL/dh_t from the layer above, (B, T, H)
        cell = self.cell
        x, h_prev, caches = self.cache
        dhs = dhs.transpose(1, 0, 2)  # (T, B, H)
        T, B, H = dhs.shape
        if dstate is None:
            dstate = tuple(np.zeros((B, H), dhs.dtype) for _ in range(cell.n_states))
        d_xw = np.empty((T, B, cell.n_gates * H), dhs.dtype)
        d_hw = np.empty_like(d_xw)
        self.dh = np.empty_like(dhs)  # total dL/dh_t, kept for the gradient-through-time plot
        for t in reversed(range(T)):
            # h_t feeds both the layer above (dhs[t]) and step t+1 (dstate[0]): add the two.
            dstate = (dstate[0] + dhs[t], *dstate[1:])
            self.dh[t] = dstate[0]
            d_xw[t], d_hw[t], dstate = cell.step_backward(dstate, caches[t])
        # The weights are shared by all steps, so their gradient is a sum over t: one product.
        cell.dW_ih[...] = d_xw.reshape(-1, d_xw.shape[2]).T @ x.reshape(-1, x.shape[2])
        cell.db_ih[...] = d_xw.sum(axis=(0, 1))
        cell.dW_hh[...] = d_hw.reshape(-1, d_hw.shape[2]).T @ h_prev.reshape(-1, H)
        cell.db_hh[...] = d_hw.sum(axis=(0, 1))
        dx = d_xw @ cell.W_ih  # (T, B, D)
        return dx.transpose(1, 0, 2), dstate  # dL/dx (B, T, D), dL/d(first state)


# ----------------------------------------------------------------------------- the model


def training_bytes(config: ModelConfig, batch_size: int, seq_len: int) -> int:
    """About what training needs: weights (drawn in float64, then cast) with a gradient and two
    Adam moments each, and per time step every layer's gates, states (and dropout masks) with
    their gradients."""
    gates = CELL_TYPES[config.cell].n_gates * config.hidden
    n_in = [config.n_embd] + [config.hidden] * (config.n_layer - 1)
    weights = config.vocab_size * config.n_embd + (config.hidden + 1) * config.vocab_size
    weights += sum(gates * (d + config.hidden + 2) for d in n_in)
    steps = batch_size * seq_len
    activations = steps * (config.n_layer * (gates + 3 * config.hidden) + 2 * config.vocab_size)
    if config.dropout > 0:  # a mask beside the input of every layer and of the head
        activations += steps * (config.n_embd + config.n_layer * config.hidden)
    item = np.dtype(config.dtype).itemsize
    return 8 * weights + item * (4 * weights + 2 * activations)


class CharRNN:
    """Characters -> embedding -> n_layer recurrent layers -> linear -> softmax over V.

    With config.dropout > 0, a dropout sits before every recurrent layer and before the head.
    """

    def __init__(self, config: ModelConfig, rng: np.random.Generator):
        if config.cell not in CELL_TYPES:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {config.cell!r}")
        self.config = config
        self.dtype = np.dtype(config.dtype)
        self.embedding = Embedding(config.vocab_size, config.n_embd, rng)
        self.layers = []
        for layer in range(config.n_layer):
            n_in = config.n_embd if layer == 0 else config.hidden
            self.layers.append(Recurrent(CELL_TYPES[config.cell](n_in, config.hidden, rng)))
        # drops[l] thins the input of layer l, drops[n_layer] the input of the head
        self.drops = [Dropout(config.dropout) for _ in range(config.n_layer + 1)]
        self.head = Dense(config.hidden, config.vocab_size, rng)
        for name, param in self.named_params().items():  # one dtype everywhere, in place
            self._set(name, param.astype(self.dtype))
        for module in self._modules():  # gradients beside the parameters: dW_ih next to W_ih
            for name in module.params():
                setattr(module, "d" + name, np.zeros_like(getattr(module, name)))

    def _modules(self):
        return [self.embedding, *(layer.cell for layer in self.layers), self.head]

    def _module_names(self):
        return ["embedding", *(f"layers.{i}" for i in range(len(self.layers))), "head"]

    def named_params(self) -> dict[str, np.ndarray]:
        """Every parameter by a stable name ('layers.0.W_hh'), for checkpoints and the optimizer."""
        return {
            f"{prefix}.{name}": p
            for prefix, module in zip(self._module_names(), self._modules())
            for name, p in module.params().items()
        }

    def named_grads(self) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.{name}": g
            for prefix, module in zip(self._module_names(), self._modules())
            for name, g in module.grads().items()
        }

    def _set(self, name: str, value: np.ndarray) -> None:
        prefix, attr = name.rsplit(".", 1)
        module = dict(zip(self._module_names(), self._modules()))[prefix]
        setattr(module, attr, value)

    def load_params(self, arrays: dict[str, np.ndarray]) -> None:
        for name, param in self.named_params().items():
            param[...] = arrays[name]

    def state_dict(self) -> dict[str, np.ndarray]:  # what shared.state saves as the model
        return {name: param.copy() for name, param in self.named_params().items()}

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        self.load_params(arrays)

    def initial_state(self, batch: int) -> list[tuple]:
        return [layer.cell.initial_state(batch, self.dtype) for layer in self.layers]

    def forward(self, idx, targets=None, state=None, dropout_rng=None):
        """idx: (B, T) character ids -> logits (B, T, V), loss (nats per character), last state.

        targets: (B, T) next-character ids, -1 where there is nothing to predict (padding).
        dropout_rng: the generator that draws the dropout masks in training; None (evaluation,
        sampling) turns dropout off.
        """
        B, T = idx.shape
        state = self.initial_state(B) if state is None else state
        x = self.embedding.forward(idx)  # (B, T, E)
        new_state = []
        for layer, drop, layer_state in zip(self.layers, self.drops, state):
            x, last = layer.forward(drop.forward(x, dropout_rng), layer_state)  # (B, T, H)
            new_state.append(last)
        x = self.drops[-1].forward(x, dropout_rng)
        logits = self.head.forward(x.reshape(B * T, -1))  # (B*T, V)
        loss = None
        if targets is not None:
            loss, self.dlogits = cross_entropy(logits, targets.reshape(-1))
        return logits.reshape(B, T, -1), loss, new_state

    def backward(self, dstate=None):
        """BPTT from the loss of the last forward; fills every parameter's gradient.

        dstate: per layer, dL/d(last state), or None to stop at the window's end (truncated BPTT).
        Returns dL/d(first state) per layer.
        """
        B, T = self.embedding.idx.shape
        dx = self.head.backward(self.dlogits).reshape(B, T, -1)  # (B, T, H)
        dx = self.drops[-1].backward(dx)
        dstate = dstate or [None] * len(self.layers)
        dfirst = [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            dx, dfirst[i] = self.layers[i].backward(dx, dstate[i])
            dx = self.drops[i].backward(dx)
        self.embedding.backward(dx)
        return dfirst

    def generate(self, prefix, n: int, rng, temperature=1.0, top_k=0, stop=None, state=None):
        """Sample n characters after the ids in `prefix` (at least one); stop early at `stop`.

        p(c) = softmax(logits / temperature), restricted to the top_k most likely when top_k > 0.
        """
        logits, _, state = self.forward(np.asarray(prefix)[None, :], state=state)
        out = []
        for _ in range(n):
            z = logits[0, -1].astype(np.float64)  # (V,)
            scaled = (z - z.max()) / temperature  # shift first: a tiny temperature cannot overflow
            if 0 < top_k < len(scaled):
                cutoff = np.partition(scaled, -top_k)[-top_k]
                scaled = np.where(scaled < cutoff, -np.inf, scaled)
            probs = np.exp(scaled - scaled.max())
            token = int(rng.choice(len(probs), p=probs / probs.sum()))
            if token == stop:
                break
            out.append(token)
            logits, _, state = self.forward(np.array([[token]]), state=state)
        return out


# ----------------------------------------------------------------------------- training helpers


def clip_grad_norm(grads, max_norm: float) -> float:
    """Scale all gradients by min(1, max_norm / ||g||), ||g|| the norm of all of them together.

    Returns the norm before clipping. One shared factor keeps the gradient's direction: an
    exploding step becomes a step of length max_norm in the same direction (Pascanu et al., 2013).
    """
    total = float(np.sqrt(sum(float((g * g).sum()) for g in grads)))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


def cosine_lr(step: int, max_steps: int, lr: float, min_lr: float) -> float:
    """The learning rate of step 1..max_steps, falling from lr to min_lr along half a cosine:

    lr_s = min_lr + (lr - min_lr) (1 + cos(pi (s - 1) / (S - 1))) / 2   (Loshchilov & Hutter, 2017)

    Large steps while the loss falls fast, small ones at the end to settle into the minimum.
    """
    progress = (step - 1) / max(max_steps - 1, 1)  # 0 at the first step, 1 at the last
    return float(min_lr + (lr - min_lr) * 0.5 * (1.0 + np.cos(np.pi * progress)))


class Adam:
    """Adam (Kingma & Ba, 2015) on named arrays, updated in place."""

    def __init__(self, params: dict, grads: dict, lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.grads = params, grads
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self.t = 0

    def step(self):
        self.t += 1
        beta1, beta2 = self.betas
        correction1, correction2 = 1 - beta1**self.t, 1 - beta2**self.t
        for k, p in self.params.items():
            g, m, v = self.grads[k], self.m[k], self.v[k]
            m *= beta1
            m += (1 - beta1) * g  # m_t = b1 m_{t-1} + (1 - b1) g
            v *= beta2
            v += (1 - beta2) * g * g  # v_t = b2 v_{t-1} + (1 - b2) g^2
            p -= self.lr * (m / correction1) / (np.sqrt(v / correction2) + self.eps)

    def state_dict(self) -> dict:
        return {"t": self.t, **{k: v.copy() for k, v in self.state().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.load_state(state, int(state["t"]))

    def state(self) -> dict[str, np.ndarray]:
        arrays = {f"adam.m.{k}": m for k, m in self.m.items()}
        arrays.update({f"adam.v.{k}": v for k, v in self.v.items()})
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray], t: int) -> None:
        for k in self.params:
            self.m[k][...] = arrays[f"adam.m.{k}"]
            self.v[k][...] = arrays[f"adam.v.{k}"]
        self.t = t


def load_model(path: str | Path) -> tuple[CharRNN, dict]:
    """The model a checkpoint of train.py describes, and the checkpoint itself."""
    ckpt = read_state(path, required=("model", "model_config", "chars", "mode"))
    try:
        config = ModelConfig(**ckpt["model_config"])
    except TypeError:
        raise CheckpointError(f"checkpoint {path} has an unknown model config") from None
    if config.cell not in CELLS:
        raise CheckpointError(f"checkpoint {path} names an unknown cell {config.cell!r}")
    model = CharRNN(config, np.random.default_rng(0))
    arrays = ckpt["model"]
    for name, param in model.named_params().items():
        if name not in arrays:
            raise CheckpointError(f"checkpoint {path} lacks the weights {name}")
        if arrays[name].shape != param.shape:
            raise CheckpointError(
                f"checkpoint {path}: {name} has shape {arrays[name].shape}, expected {param.shape}"
            )
    model.load_params(arrays)
    return model, ckpt
