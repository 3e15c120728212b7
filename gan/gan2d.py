"""A GAN on 2-D points in NumPy: MLP generator and discriminator with hand-written backward passes.

The discriminator's backward pass returns dL/dx, the gradient with respect to its *input*; for the
generator step that input is G(z), so the same array flows on into the generator's backward pass.
That hand-off is the whole trick of adversarial training, and here every step of it is visible.

This file is also the 2-D GAN's training script (the image GANs train with train.py):

    python gan2d.py                  # a ring of 8 Gaussians, 6,000 steps
    python gan2d.py --pack 1         # the original GAN, without packing: watch modes drop out
    python gan2d.py --toy spiral     # or moons

Shapes: N = batch size, Z = latent size, H = hidden width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import report
from threadpoolctl import threadpool_limits

from shared.cli import RunConfig, arg, cli_main
from shared.data import make_toy, ring8_modes
from shared.errors import UserError
from shared.logging import progress, start_run
from shared.runtime import check_fits_in_memory, seed_everything
from shared.state import TrainingState, load_for_resume

PROJECT = Path(__file__).parent


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

        Real and fake points go through D as one batch so D's caches hold both; the two
        batches may differ in size, so the real logits are the first len(x_real)/pack.
        """
        for name, n in (("real points", len(x_real)), ("latents", len(z))):
            if n % self.pack:
                raise ValueError(f"{n} {name} do not split into groups of {self.pack}")
        x_fake = self.G.forward(z)  # (M, 2); G's gradients are not needed here
        logits = self.discriminate(np.concatenate([x_real, x_fake]))  # ((N+M)/pack, 1)
        n_real = len(x_real) // self.pack
        loss, d_real, d_fake = discriminator_loss(logits[:n_real], logits[n_real:])
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

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter by name (G.0 = G's first W, G.1 its b, ...), copied."""
        named = {f"G.{i}": p.copy() for i, p in enumerate(self.G.params())}
        named.update({f"D.{i}": p.copy() for i, p in enumerate(self.D.params())})
        return named

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        """Put the parameters back in place; ValueError naming the first one that does not fit."""
        params = {f"G.{i}": p for i, p in enumerate(self.G.params())}
        params.update({f"D.{i}": p for i, p in enumerate(self.D.params())})
        for name, param in params.items():
            if name not in arrays or np.shape(arrays[name]) != param.shape:
                raise ValueError(f"parameter {name} is missing or has another shape")
            param[...] = arrays[name]


class Adam:
    """Adam (Kingma & Ba, 2015) on a list of arrays, updated in place."""

    def __init__(self, params, grads, lr: float, betas=(0.5, 0.999), eps: float = 1e-8):
        self.params, self.grads = params, grads
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def state_dict(self) -> dict:
        return {"t": self.t, "m": [m.copy() for m in self.m], "v": [v.copy() for v in self.v]}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        for mine, saved in zip(self.m + self.v, list(state["m"]) + list(state["v"]), strict=True):
            mine[...] = saved

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


def surface_grid(limit: float, n: int = 60):
    """An (n*n, 2) grid over [-limit, limit]^2 and its axis (n,), for D's decision surface."""
    axis = np.linspace(-limit, limit, n)
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx.ravel(), yy.ravel()], axis=1), axis


def discriminator_surface(model: GAN2D, grid):
    """sigmoid(D) at each grid point (n*n,); a packed D sees the point repeated `pack` times."""
    logits = model.D.forward(np.tile(grid, (1, model.pack)))  # (n*n, 1)
    return sigmoid(logits[:, 0])


# ----------------------------------------------------------------------------- training

TOY_NOISE = {"ring8": 0.05, "spiral": 0.2, "moons": 0.1}  # shared.data's defaults
CHECKPOINT = "model.npz"
# They decide the data, the networks and the schedule: a resumed run must use the same.
MUST_MATCH = ("toy", "steps", "hidden", "pack", "batch_size", "lr", "frames")
N_FIXED = 500  # generated points drawn in every GIF frame, from the same latents


@dataclass
class TrainConfig(RunConfig):
    toy: str = arg(
        "ring8", "2-D data: ring of 8 Gaussians, spiral or moons", choices=tuple(TOY_NOISE)
    )
    steps: int = arg(6000, "alternating discriminator and generator updates", min=1)
    hidden: int = arg(64, "hidden units per layer, in both networks", min=1)
    pack: int = arg(2, "points the discriminator judges together (PacGAN; 1 = plain GAN)", min=1)
    batch_size: int = arg(256, "real points per step (and as many generated)", min=1)
    lr: float = arg(
        2e-3,
        "Adam learning rate; linear decay to 0 over the second half",
        min=0,
        min_inclusive=False,
    )
    frames: int = arg(40, "snapshots in training.gif; each is also a checkpoint", min=1)
    log_every: int = arg(50, "steps between log lines", min=1)

    def check(self):
        if self.batch_size % self.pack:
            raise UserError(
                f"--batch-size {self.batch_size} must be a multiple of --pack {self.pack}"
            )


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """20 steps of a tiny model, two snapshots (checkpoints at 10 and 20), every step logged."""
    return dataclasses.replace(cfg, steps=20, hidden=8, frames=2, log_every=1)


def check_memory(model_config: GAN2DConfig, cfg: TrainConfig) -> None:
    """Both MLPs (weights, gradients, Adam's two moments: 4 float64 arrays each) and the
    activations of one step (about 8 arrays of N x H) and of the decision-surface grid."""
    H, Z, L = model_config.hidden, model_config.z_dim, model_config.n_hidden
    n_params = (Z + 2 * cfg.pack + 3) * H + 2 * (L - 1) * (H * H + H)
    activations = 8 * (2 * cfg.batch_size + 3600) * H * L
    check_fits_in_memory(
        8 * (4 * n_params + activations), f"--hidden {H} --batch-size {cfg.batch_size}"
    )


def evaluate(toy: str, samples, real) -> dict:
    """Ring: modes covered and the share within 3 sigma of one; else nearest-neighbour scores."""
    if toy == "ring8":
        return mode_coverage(samples, ring8_modes(), TOY_NOISE["ring8"])
    return nearest_neighbour_scores(samples, real, radius=0.1)


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    ckpt = load_for_resume(cfg, PROJECT, CHECKPOINT, must_match=MUST_MATCH)
    seed_everything(cfg.seed)  # the global generators, unused here, saved in every checkpoint
    model_config = GAN2DConfig(hidden=cfg.hidden, pack=cfg.pack)
    check_memory(model_config, cfg)
    run = start_run(f"NumPy GAN on {cfg.toy}", cfg, PROJECT)
    real, _ = make_toy(cfg.toy, n=20_000, seed=cfg.seed)  # (20000, 2)
    model = GAN2D(model_config, np.random.default_rng(cfg.seed))
    opt_D = Adam(model.D.params(), model.D.grads(), cfg.lr)
    opt_G = Adam(model.G.params(), model.G.grads(), cfg.lr)
    state = TrainingState(run.path / CHECKPOINT, cfg, model=model, opt_D=opt_D, opt_G=opt_G)
    start = state.restore(ckpt)
    # The GIF's frames so far: the fixed latents' points and D's surface at each snapshot.
    snapshots = state.extra.get("snapshots", {"step": [], "fake": [], "surface": []})
    grid, axis = surface_grid(float(np.abs(real).max()) * 1.25)
    fixed_z = np.random.default_rng(cfg.seed + 1).standard_normal((N_FIXED, model_config.z_dim))
    frame_steps = set(np.linspace(0, cfg.steps, cfg.frames + 1).round().astype(int)[1:].tolist())
    N, Z = cfg.batch_size, model_config.z_dim

    # Our matrices are small (batch x 64): one BLAS thread is fastest, and several threads
    # spin against each other on a busy machine (50x slower here under load).
    with threadpool_limits(limits=1, user_api="blas"):
        for step in progress(range(start, cfg.steps), desc="train", total=cfg.steps, initial=start):
            # One generator per step: a resumed run draws exactly the batches it would have drawn.
            rng = np.random.default_rng([cfg.seed, step])
            x_real = real[rng.integers(0, len(real), N)]  # (N, 2)
            # Linear decay over the second half sharpens the modes once all are found.
            for opt in (opt_D, opt_G):
                opt.lr = cfg.lr * min(1.0, 2.0 * (1.0 - step / cfg.steps))
            # 1. discriminator: ascend log D(x) + log(1 - D(G(z)))
            loss_D = model.discriminator_grads(x_real, rng.standard_normal((N, Z)))
            opt_D.step()
            # 2. generator: descend -log D(G(z)), the gradient coming back through D
            loss_G = model.generator_grads(rng.standard_normal((N, Z)))
            opt_G.step()
            if (step + 1) % cfg.log_every == 0:
                run.log(step=step + 1, loss_D=float(loss_D), loss_G=float(loss_G))
            if step + 1 in frame_steps:
                snapshots["step"].append(step + 1)
                snapshots["fake"].append(model.sample(fixed_z))  # (500, 2)
                snapshots["surface"].append(discriminator_surface(model, grid))  # (3600,)
                state.save(step + 1, config=asdict(model_config), snapshots=snapshots)

        # Evaluation: fresh samples, scored against the data's own structure.
        z = np.random.default_rng(cfg.seed + 2).standard_normal((2500, Z))
        samples = model.sample(z)  # (2500, 2)
        scores = evaluate(cfg.toy, samples, real[:2500])
        surface = discriminator_surface(model, grid)
    report.write_2d_figures(
        run.path, cfg.toy, real[:1000], samples[:1000], surface, axis, snapshots, scores
    )
    metric = "high_quality_share" if cfg.toy == "ring8" else "precision"
    return run.finish(metric=metric, value=scores[metric], higher_is_better=True, **scores)


if __name__ == "__main__":
    cli_main(main, TrainConfig)
