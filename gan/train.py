"""Train a GAN: by default the NumPy GAN on a ring of eight Gaussians; with --model, an image GAN.

python train.py                                  # NumPy GAN, 2-D ring of 8 Gaussians
python train.py --toy spiral                     # or moons
python train.py --model dcgan                    # DCGAN on the bundled 8x8 digits (at 16x16)
python train.py --model wgan-gp --spectral-norm  # gan, dcgan, lsgan, wgan-gp; --loss hinge
python train.py --model dcgan --conditional --dataset mnist --epochs 5
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from gan2d import GAN2D, Adam, GAN2DConfig, mode_coverage, nearest_neighbour_scores, sigmoid

from shared.checkpoint import load_arrays, save_arrays
from shared.cli import RunConfig, arg, cli_main
from shared.data import make_toy, ring8_modes
from shared.errors import CheckpointError, UserError
from shared.logging import progress, start_run
from shared.plots import figure_to_array, plot_curves, save_figure, save_gif

PROJECT = Path(__file__).parent
IMAGE_MODELS = ("gan", "dcgan", "lsgan", "wgan-gp")  # model.MODELS, without importing torch
LOSS_CHOICES = ("auto", "non-saturating", "least-squares", "wasserstein", "hinge")
IMAGE_SIZES = {"digits": 16, "mnist": 28, "fashion-mnist": 28}  # the judge's sides
TOY_NOISE = {"ring8": 0.05, "spiral": 0.2, "moons": 0.1}  # shared.data's defaults


@dataclass
class TrainConfig(RunConfig):
    model: str = arg(
        "numpy",
        "numpy: the NumPy GAN on 2-D points; gan (MLP), dcgan, lsgan, wgan-gp: image GANs",
        choices=("numpy", *IMAGE_MODELS),
    )
    # --- the NumPy GAN on 2-D points
    toy: str = arg("ring8", "2-D data for --model numpy", choices=tuple(TOY_NOISE))
    steps: int = arg(6000, "--model numpy: alternating D and G updates", min=1)
    hidden: int = arg(64, "--model numpy: hidden units per layer", min=1)
    pack: int = arg(2, "--model numpy: points D judges together (PacGAN; 1 = plain GAN)", min=1)
    frames: int = arg(40, "--model numpy: snapshots in the training GIF", min=1)
    # --- the image GANs
    dataset: str = arg("digits", "images for the image GANs", choices=tuple(IMAGE_SIZES))
    loss: str = arg(
        "auto", "auto: the model's own (non-saturating for gan and dcgan)", choices=LOSS_CHOICES
    )
    spectral_norm: bool = arg(False, "spectral norm on every discriminator layer")
    conditional: bool = arg(False, "condition both networks on the class label")
    epochs: int = arg(100, "image GANs: passes of the generator over the training set", min=1)
    z_dim: int = arg(64, "image GANs: latent size", min=1)
    width: int = arg(64, "image GANs: channels of the first conv layer (MLP: x4 units)", min=1)
    n_critic: int = arg(
        0, "discriminator updates per generator update (0: 5 for wgan-gp, else 1)", min=0
    )
    gp_weight: float = arg(10.0, "--model wgan-gp: weight lambda of the gradient penalty", min=0)
    num_eval: int = arg(0, "samples judged at the end (0: as many as the real test images)", min=0)
    save_every: int = arg(10, "image GANs: epochs between checkpoints", min=1)
    threads: int = arg(0, "torch CPU threads (0: torch's default)", min=0)
    # --- both
    batch_size: int = arg(0, "batch size (0: 256 for numpy, 64 for images)", min=0)
    lr: float = arg(0.0, "Adam learning rate (0: 2e-3 numpy, 2e-4 images, 1e-4 wgan-gp)", min=0)

    def check(self):
        if self.model == "numpy" and (self.spectral_norm or self.conditional):
            raise UserError("--spectral-norm and --conditional apply to the image GANs only")
        if self.model == "numpy" and self.loss != "auto":
            raise UserError("--loss applies to the image GANs (the NumPy GAN is non-saturating)")


# ============================================================================= NumPy, 2-D


def surface_grid(limit: float, n: int = 60):
    """An (n*n, 2) grid over [-limit, limit]^2 and its two axes, for D's decision surface."""
    axis = np.linspace(-limit, limit, n)
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx.ravel(), yy.ravel()], axis=1), axis


def discriminator_surface(model: GAN2D, grid):
    """sigmoid(D) at each grid point; packed D sees the point repeated `pack` times."""
    logits = model.D.forward(np.tile(grid, (1, model.pack)))  # (n*n, 1)
    return sigmoid(logits[:, 0])


def draw_2d(real, fake, surface, axis, title):
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    n = len(axis)
    levels = np.linspace(0, 1, 11)
    contour = ax.contourf(axis, axis, surface.reshape(n, n), levels=levels, cmap="RdBu", alpha=0.6)
    fig.colorbar(contour, ax=ax, fraction=0.046, pad=0.04, label="D(x)")
    ax.scatter(real[:, 0], real[:, 1], s=3, c="black", alpha=0.4, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, c="orange", alpha=0.7, label="generated")
    ax.set_xlim(axis[0], axis[-1])
    ax.set_ylim(axis[0], axis[-1])
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    return fig


def evaluate_2d(cfg: TrainConfig, samples, real) -> dict:
    if cfg.toy == "ring8":
        return mode_coverage(samples, ring8_modes(), TOY_NOISE["ring8"])
    return nearest_neighbour_scores(samples, real, radius=0.1)


def train_numpy(cfg: TrainConfig) -> dict:
    # Our matrices are small (batch x 64): one BLAS thread is fastest, and several threads
    # spin against each other on a busy machine (50x slower here under load).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return train_numpy_single_thread(cfg)


def train_numpy_single_thread(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg.steps, cfg.hidden, cfg.frames = 20, 8, 2
    batch = cfg.batch_size or 256
    lr = cfg.lr or 2e-3
    if batch % cfg.pack:
        raise UserError(f"--batch-size {batch} must be a multiple of --pack {cfg.pack}")
    run = start_run(f"NumPy GAN on {cfg.toy}", cfg, PROJECT)
    real, _ = make_toy(cfg.toy, n=20_000, seed=cfg.seed)
    model_config = GAN2DConfig(hidden=cfg.hidden, pack=cfg.pack)
    model = GAN2D(model_config, np.random.default_rng(cfg.seed))
    opt_D = Adam(model.D.params(), model.D.grads(), lr)
    opt_G = Adam(model.G.params(), model.G.grads(), lr)
    limit = float(np.abs(real).max()) * 1.25
    grid, axis = surface_grid(limit)
    fixed_z = np.random.default_rng(cfg.seed + 1).standard_normal((500, model_config.z_dim))
    frame_steps = set(np.linspace(0, cfg.steps, cfg.frames + 1).round().astype(int)[1:].tolist())
    history = {"step": [], "loss_D": [], "loss_G": []}
    snapshots = {"step": [], "fake": [], "surface": []}  # rendered into the GIF at the end
    checkpoint = run.path / "model.npz"
    start = 0
    if cfg.resume and checkpoint.exists():
        start = load_numpy_state(checkpoint, model, opt_D, opt_G, history, snapshots)
        print(f"resumed at step {start} from {checkpoint}")

    def save(step):
        state = {f"model.{k}": v for k, v in model.state().items()}
        for name, opt in (("opt_D", opt_D), ("opt_G", opt_G)):
            state.update({f"{name}.m{i}": m for i, m in enumerate(opt.m)})
            state.update({f"{name}.v{i}": v for i, v in enumerate(opt.v)})
        state.update({f"history.{k}": np.asarray(v) for k, v in history.items()})
        state.update({f"snapshots.{k}": np.asarray(v) for k, v in snapshots.items()})
        meta = {"kind": "numpy-gan2d", "step": step, "adam_t": opt_G.t, "toy": cfg.toy}
        save_arrays(checkpoint, state, {**meta, "config": asdict(model_config)})

    for step in progress(range(start, cfg.steps), desc="train", total=cfg.steps, initial=start):
        # One generator per step: a resumed run draws exactly the batches it would have drawn.
        rng = np.random.default_rng([cfg.seed, step])
        x_real = real[rng.integers(0, len(real), batch)]  # (N, 2)
        # Linear decay over the second half sharpens the modes once all are found.
        for opt in (opt_D, opt_G):
            opt.lr = lr * min(1.0, 2.0 * (1.0 - step / cfg.steps))
        # 1. discriminator: ascend log D(x) + log(1 - D(G(z)))
        loss_D = model.discriminator_grads(x_real, rng.standard_normal((batch, model_config.z_dim)))
        opt_D.step()
        # 2. generator: descend -log D(G(z)), the gradient coming back through D
        loss_G = model.generator_grads(rng.standard_normal((batch, model_config.z_dim)))
        opt_G.step()
        if step % 50 == 0:
            history["step"].append(step)
            history["loss_D"].append(float(loss_D))
            history["loss_G"].append(float(loss_G))
            run.log(step=step, loss_D=float(loss_D), loss_G=float(loss_G))
        if step + 1 in frame_steps:
            snapshots["step"].append(step + 1)
            snapshots["fake"].append(model.sample(fixed_z))
            snapshots["surface"].append(discriminator_surface(model, grid))
            save(step + 1)

    # Evaluation: fresh samples, scored against the data's own structure.
    eval_rng = np.random.default_rng(cfg.seed + 2)
    samples = model.sample(eval_rng.standard_normal((2500, model_config.z_dim)))
    scores = evaluate_2d(cfg, samples, real[:2500])
    shown = real[:1000]
    frames = [
        figure_to_array(draw_2d(shown, fake, surface, axis, f"step {s}"))
        for s, fake, surface in zip(
            snapshots["step"], snapshots["fake"], snapshots["surface"], strict=True
        )
    ]
    save_gif(run.path / "training.gif", frames, duration_ms=150)
    summary = ", ".join(f"{k} {v:.3g}" for k, v in scores.items() if not isinstance(v, list))
    final = draw_2d(shown, samples[:1000], discriminator_surface(model, grid), axis, summary)
    save_figure(final, run.path / "samples.png")
    plot_curves(
        run.path / "losses.png",
        {
            "discriminator": (history["step"], history["loss_D"]),
            "generator": (history["step"], history["loss_G"]),
        },
        title=f"NumPy GAN on {cfg.toy} (log 4 = {np.log(4):.2f} at equilibrium)",
    )
    if cfg.toy == "ring8":
        metric = "high_quality_share"
    else:
        metric = "precision"
    return run.finish(metric=metric, value=scores[metric], higher_is_better=True, **scores)


def load_numpy_state(path, model, opt_D, opt_G, history, snapshots) -> int:
    arrays, meta = load_arrays(path)
    if meta.get("kind") != "numpy-gan2d":
        raise CheckpointError(f"checkpoint {path} is not a NumPy GAN checkpoint")
    try:
        for name, param in model.state().items():
            if arrays[f"model.{name}"].shape != param.shape:
                raise CheckpointError(f"checkpoint {path} does not fit the model ({name})")
            param[...] = arrays[f"model.{name}"]
        for name, opt in (("opt_D", opt_D), ("opt_G", opt_G)):
            for i in range(len(opt.m)):
                opt.m[i][...] = arrays[f"{name}.m{i}"]
                opt.v[i][...] = arrays[f"{name}.v{i}"]
            opt.t = int(meta["adam_t"])
    except KeyError as err:
        raise CheckpointError(f"checkpoint {path} lacks {err}") from None
    for key in history:
        history[key] = arrays[f"history.{key}"].tolist()
    for key in snapshots:
        snapshots[key] = list(arrays[f"snapshots.{key}"])
    return int(meta["step"])


# ============================================================================= images, PyTorch


def train_images(cfg: TrainConfig) -> dict:
    # torch is imported here, so that the NumPy GAN runs on NumPy alone.
    import torch
    from model import (
        MODEL_LOSS,
        GANConfig,
        ImageGAN,
        discriminator_loss,
        generator_loss,
        gradient_penalty,
        n_parameters,
    )

    from shared.checkpoint import load_checkpoint, load_model_state, save_checkpoint
    from shared.data import load_images
    from shared.metrics import get_judge
    from shared.plots import images_to_grid, save_image, save_image_grid
    from shared.runtime import get_device, seed_everything, set_threads

    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    device = get_device(cfg.device)
    loss_kind = MODEL_LOSS[cfg.model] if cfg.loss == "auto" else cfg.loss
    n_critic = cfg.n_critic or (5 if cfg.model == "wgan-gp" else 1)
    lr = cfg.lr or (1e-4 if cfg.model == "wgan-gp" else 2e-4)
    # WGAN-GP's recipe: no momentum in the critic's optimiser (beta1 = 0); DCGAN's: beta1 = 0.5.
    betas = (0.0, 0.9) if cfg.model == "wgan-gp" else (0.5, 0.999)
    batch = cfg.batch_size or 64

    size = IMAGE_SIZES[cfg.dataset]
    x_train, y_train = load_images(cfg.dataset, "train", cfg.data_dir, size=size, seed=cfg.seed)
    x_test, _ = load_images(cfg.dataset, "test", cfg.data_dir, size=size, seed=cfg.seed)
    n_classes = int(y_train.max()) + 1
    steps_per_epoch = max(1, len(x_train) // batch)
    num_eval = cfg.num_eval or len(x_test)
    if cfg.dry_run:
        cfg.epochs, cfg.width, steps_per_epoch, num_eval = 2, 8, 2, 64
    images = torch.from_numpy(x_train).to(device) * 2 - 1  # [0, 1] -> [-1, 1], tanh's range
    labels = torch.from_numpy(y_train).to(device)

    config = GANConfig(
        model=cfg.model,
        loss=loss_kind,
        image_size=size,
        channels=images.shape[1],
        z_dim=cfg.z_dim,
        width=cfg.width,
        n_classes=n_classes if cfg.conditional else 0,
        spectral_norm=cfg.spectral_norm,
    )
    name = cfg.model + (" + spectral norm" if cfg.spectral_norm else "")
    name += f" ({loss_kind} loss)" if cfg.loss != "auto" else ""
    run = start_run(f"{name} on {cfg.dataset}", cfg, PROJECT)
    gan = ImageGAN(config).to(device)
    G, D = gan.generator, gan.discriminator
    opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    print(f"{name}: G {n_parameters(G):,} and D {n_parameters(D):,} parameters on {device}")

    fixed = torch.Generator().manual_seed(cfg.seed + 1)
    fixed_z = torch.randn(64, cfg.z_dim, generator=fixed).to(device)
    fixed_labels = (torch.arange(64) % n_classes).to(device) if cfg.conditional else None
    history = {"step": [], "loss_D": [], "loss_G": []}
    frames = []  # the fixed batch after every epoch, for the GIF
    checkpoint = run.path / "model.pt"
    start_epoch = 0
    if cfg.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, required=("model", "opt_G", "opt_D", "epoch"))
        load_model_state(gan, state["model"], checkpoint)
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        history, start_epoch = state["history"], state["epoch"]
        frames = list(state["frames"].numpy())
        torch.set_rng_state(state["rng"])
        print(f"resumed after epoch {start_epoch} from {checkpoint}")

    def save(epoch):
        state = {
            "model": gan.state_dict(),
            "config": asdict(config),
            "opt_G": opt_G.state_dict(),
            "opt_D": opt_D.state_dict(),
            "epoch": epoch,
            "history": history,
            "frames": torch.from_numpy(np.stack(frames)),
            "rng": torch.get_rng_state(),
        }
        save_checkpoint(checkpoint, state)

    def real_batch():
        index = torch.randint(0, len(images), (batch,), device=device)
        return images[index], labels[index] if cfg.conditional else None

    def fake_labels():
        return torch.randint(0, n_classes, (batch,), device=device) if cfg.conditional else None

    (run.path / "samples").mkdir(exist_ok=True)
    step = start_epoch * steps_per_epoch
    for epoch in progress(range(start_epoch, cfg.epochs), desc="epochs", total=cfg.epochs):
        gan.train()
        for _ in range(steps_per_epoch):
            # 1. discriminator (critic): n_critic updates on fresh real and generated batches
            for _ in range(n_critic):
                x_real, y = real_batch()
                with torch.no_grad():  # fakes get the real batch's labels: the penalty pairs them
                    x_fake = G(torch.randn(batch, cfg.z_dim, device=device), y)
                loss_D = discriminator_loss(loss_kind, D(x_real, y), D(x_fake, y))
                if cfg.model == "wgan-gp":
                    loss_D = loss_D + cfg.gp_weight * gradient_penalty(D, x_real, x_fake, y)
                opt_D.zero_grad(set_to_none=True)
                loss_D.backward()
                opt_D.step()
            # 2. generator: one update against the discriminator as it now stands
            y_fake = fake_labels()
            loss_G = generator_loss(
                loss_kind, D(G(torch.randn(batch, cfg.z_dim, device=device), y_fake), y_fake)
            )
            opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
            opt_G.step()
            if step % 10 == 0:
                history["step"].append(step)
                history["loss_D"].append(loss_D.item())
                history["loss_G"].append(loss_G.item())
            step += 1
        run.log(epoch=epoch + 1, step=step, loss_D=loss_D.item(), loss_G=loss_G.item())
        gan.eval()
        grid = images_to_grid(gan.sample(fixed_z, fixed_labels).cpu(), nrow=8)
        frames.append((grid * 255).round().astype(np.uint8))
        save_image(run.path / "samples" / f"epoch_{epoch + 1:03d}.png", grid, scale=4)
        if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == cfg.epochs:
            save(epoch + 1)

    # Evaluation: the judge's Frechet distance, beside the real-vs-real floor.
    gan.eval()
    judge = get_judge(cfg.dataset, data_dir=cfg.data_dir, device=device)
    eval_gen = torch.Generator().manual_seed(cfg.seed + 2)
    z = torch.randn(num_eval, cfg.z_dim, generator=eval_gen).to(device)
    eval_labels = (torch.arange(num_eval) % n_classes).to(device) if cfg.conditional else None
    samples = gan.sample(z, eval_labels).cpu()
    report = judge.evaluate(samples, eval_labels.cpu().numpy() if cfg.conditional else None)

    # At most 25 frames, evenly spaced and ending on the last epoch, keep the GIF small.
    shown = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), 25)).round().astype(int))
    save_gif(run.path / "training.gif", [frames[i] for i in shown], duration_ms=200, scale=2)
    save_image_grid(run.path / "samples.png", samples[:64], nrow=8)
    plot_curves(
        run.path / "losses.png",
        {
            "discriminator": (history["step"], history["loss_D"]),
            "generator": (history["step"], history["loss_G"]),
        },
        title=name,
    )
    return run.finish(
        metric="frechet",
        value=report["frechet"],
        higher_is_better=False,
        frechet_floor=report["frechet_floor"],
        classes_covered=report["classes_covered"],
        confidence=report["confidence"],
        class_histogram=report["class_histogram"],
        **({"accuracy": report["accuracy"]} if cfg.conditional else {}),
        num_eval=num_eval,
        judge_test_accuracy=judge.test_accuracy,
        generator_steps=step,
    )


def main(cfg: TrainConfig) -> dict:
    if cfg.model == "numpy":
        return train_numpy(cfg)
    return train_images(cfg)


if __name__ == "__main__":
    cli_main(main, TrainConfig)
