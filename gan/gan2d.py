"""A GAN on 2-D points in NumPy: MLP generator and discriminator with hand-written backward passes.

The discriminator's backward pass returns dL/dx, the gradient with respect to its *input*; for the
generator step that input is G(z), so the same array flows on into the generator's backward pass.
That hand-off is the whole trick of adversarial training, and here every step of it is visible.

Shapes: N = batch size, Z = latent size, H = hidden width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GAN2DConfig:
    z_dim: int = 8  # latent size Z
    hidden: int = 64  # width H of every hidden layer, in both networks
    n_hidden: int = 2  # hidden layers per network
    slope: float = 0.2  # LeakyReLU slope for negative inputs
    pack: int = 2  # PacGAN: D judges `pack` points at once (1 = the original GAN)


# ----------------------------------------------------------------------------- layers


class Dense:
    """y = x W + b."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator):
        self.W = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)  # He init, (n_in, n_out)
        self.b = np.zeros(n_out)
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros_like(self.b)

    def forward(self, x):  # x: (N, n_in)
        self.x = x
        return x @ self.W + self.b  # (N, n_out)

    def backward(self, dout):  # dout: dL/dy, (N, n_out)
        self.dW[...] = self.x.T @ dout  # dL/dW = x^T dL/dy
        self.db[...] = dout.sum(axis=0)
        return dout @ self.W.T  # dL/dx, (N, n_in)

    def params(self):
        return [self.W, self.b]

    def grads(self):
        return [self.dW, self.db]


class LeakyReLU:
    """y = x for x > 0, slope * x otherwise."""

    def __init__(self, slope: float):
        self.slope = slope

    def forward(self, x):
        self.positive = x > 0
        return np.where(self.positive, x, self.slope * x)

    def backward(self, dout):
        return np.where(self.positive, dout, self.slope * dout)

    def params(self):
        return []

    def grads(self):
        return []


class MLP:
    """Dense -> LeakyReLU -> ... -> Dense: the generator and the discriminator both."""

    def __init__(self, sizes: list[int], slope: float, rng: np.random.Generator):
        self.layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            self.layers.append(Dense(n_in, n_out, rng))
            if i < len(sizes) - 2:  # no activation after the last layer
                self.layers.append(LeakyReLU(slope))

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout  # dL/d(input)

    def params(self):
        return [p for layer in self.layers for p in layer.params()]

    def grads(self):
        return [g for layer in self.layers for g in layer.grads()]


# ----------------------------------------------------------------------------- losses


def sigmoid(x):
    """1 / (1 + e^-x), without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(x):
    """log(1 + e^x) = -log sigmoid(-x), computed stably."""
    return np.logaddexp(0.0, x)


def discriminator_loss(real_logits, fake_logits):
    """L_D = -E[log D(x)] - E[log(1 - D(G(z)))], D = sigmoid(logit); returns L_D and dL_D/dlogits.

    -log sigmoid(a) = softplus(-a) and -log(1 - sigmoid(a)) = softplus(a).
    """
    n_real, n_fake = len(real_logits), len(fake_logits)
    loss = softplus(-real_logits).mean() + softplus(fake_logits).mean()
    d_real = (sigmoid(real_logits) - 1.0) / n_real  # d softplus(-a)/da = sigmoid(a) - 1
    d_fake = sigmoid(fake_logits) / n_fake  # d softplus(a)/da = sigmoid(a)
    return loss, d_real, d_fake


def generator_loss(fake_logits):
    """Non-saturating L_G = -E[log D(G(z))]; returns loss and dL/dlogits."""
    loss = softplus(-fake_logits).mean()
    return loss, (sigmoid(fake_logits) - 1.0) / len(fake_logits)


# ----------------------------------------------------------------------------- the GAN


class GAN2D:
    """Generator G: z (N, Z) -> x (N, 2); discriminator D: x (N, 2) -> logit (N, 1)."""

    def __init__(self, config: GAN2DConfig, rng: np.random.Generator):
        self.config = config
        hidden = [config.hidden] * config.n_hidden
        self.G = MLP([config.z_dim, *hidden, 2], config.slope, rng)
        self.D = MLP([2 * config.pack, *hidden, 1], config.slope, rng)
        self.pack = config.pack

    def sample(self, z):  # z: (N, Z)
        return self.G.forward(z)  # (N, 2)

    def discriminator_grads(self, x_real, z):
        """Forward and backward of L_D; fills D's gradients and returns the loss.

        Real and fake points go through D as one batch so D's caches hold both halves.
        """
        x_fake = self.G.forward(z)  # (N, 2); G's gradients are not needed here
        logits = self.discriminate(np.concatenate([x_real, x_fake]))  # (2N/pack, 1)
        n = len(logits) // 2
        loss, d_real, d_fake = discriminator_loss(logits[:n], logits[n:])
        self.D.backward(np.concatenate([d_real, d_fake]))
        return loss

    def generator_grads(self, z):
        """Forward and backward of L_G through D into G; fills G's gradients, returns the loss.

        D's backward also overwrites D's gradients, which the generator step never applies.
        """
        x_fake = self.G.forward(z)  # (N, 2)
        loss, d_logits = generator_loss(self.discriminate(x_fake))
        d_packed = self.D.backward(d_logits)  # (N/pack, 2*pack)
        d_x_fake = d_packed.reshape(x_fake.shape)  # dL_G/dG(z), (N, 2): D's backward, into G
        self.G.backward(d_x_fake)
        return loss

    def discriminate(self, x):  # x: (N, 2), N a multiple of pack
        """D's logits for groups of `pack` consecutive points, (N/pack, 1)."""
        return self.D.forward(x.reshape(len(x) // self.pack, 2 * self.pack))

    def state(self) -> dict[str, np.ndarray]:
        """Every parameter by name, for save_arrays."""
        named = {f"G.{i}": p for i, p in enumerate(self.G.params())}
        named.update({f"D.{i}": p for i, p in enumerate(self.D.params())})
        return named

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for name, param in self.state().items():
            param[...] = arrays[name]


class Adam:
    """Adam (Kingma & Ba, 2015) on a list of arrays, updated in place."""

    def __init__(self, params, grads, lr: float, betas=(0.5, 0.999), eps: float = 1e-8):
        self.params, self.grads = params, grads
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self):
        self.t += 1
        beta1, beta2 = self.betas
        for p, g, m, v in zip(self.params, self.grads, self.m, self.v, strict=True):
            m[...] = beta1 * m + (1 - beta1) * g  # first moment
            v[...] = beta2 * v + (1 - beta2) * g * g  # second moment
            m_hat = m / (1 - beta1**self.t)  # bias corrections
            v_hat = v / (1 - beta2**self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


# ----------------------------------------------------------------------------- evaluation


def mode_coverage(samples, modes, sigma: float, min_count: int = 20) -> dict:
    """How many modes the samples hit, and how many samples land near a mode.

    A sample is "high quality" when it lies within 3 sigma of its nearest mode; a mode is covered
    when at least `min_count` high-quality samples land on it.
    """
    distances = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=2)  # (N, M)
    nearest = distances.argmin(axis=1)
    near = distances[np.arange(len(samples)), nearest] <= 3 * sigma
    counts = np.bincount(nearest[near], minlength=len(modes))
    return {
        "modes_covered": int((counts >= min_count).sum()),
        "high_quality_share": float(near.mean()),
        "mode_counts": counts.tolist(),
    }


def nearest_neighbour_scores(samples, real, radius: float) -> dict:
    """Precision: share of samples within `radius` of a real point; recall: the converse."""
    distances = np.linalg.norm(samples[:, None, :] - real[None, :, :], axis=2)  # (N, M)
    return {
        "precision": float((distances.min(axis=1) <= radius).mean()),
        "recall": float((distances.min(axis=0) <= radius).mean()),
    }
