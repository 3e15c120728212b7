"""Train a variational autoencoder, then measure its test log-likelihood with the ELBO and the
importance-weighted bound (IWAE, k samples), in nats per image.

    python train.py                                   # MLP VAE on the embedded 8x8 digits
    python train.py --arch conv --beta 4              # a convolutional beta-VAE
    python train.py --preset mnist --data-dir DATA    # binarised MNIST, IWAE k = 5000
    python train.py --image-dir my_photos --likelihood continuous-bernoulli --arch conv

Besides the model you ask for, the default run trains two small companions for the figures
that need them: a VAE with a 2-D latent (the decoded manifold) and a conditional VAE (samples
of each class). --no-companions skips them. All of them train side by side, a step each on
the same batch, and are saved together in one checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import report
import torch
from data import count_images, load_dataset
from model import ARCHS, LIKELIHOODS, VAE, VAEConfig, iwae_bound

from shared.cli import Preset, RunConfig, arg, cli_main
from shared.data import IMAGE_DATASETS
from shared.errors import UserError
from shared.logging import progress, start_run
from shared.runtime import (
    PRECISION_HELP,
    PRECISIONS,
    check_fits_in_memory,
    count_parameters,
    init_distributed,
    mixed_precision,
    seed_everything,
    set_threads,
)
from shared.state import TrainingState, load_for_resume

PROJECT = Path(__file__).parent
CHECKPOINT = "model.pt"
NATIVE_SIZE = {"digits": 8, "mnist": 28, "fashion-mnist": 28}
FOLDER_SIZE = 32
EVAL_ROWS = 10_000  # decoder rows per evaluation pass: images x importance samples
# What decides the data, the models and their objective: a resumed run must keep them.
MUST_MATCH = (
    "dataset",
    "image_dir",
    "image_size",
    "arch",
    "likelihood",
    "latent_dim",
    "hidden",
    "beta",
    "conditional",
    "companions",
    "lr",
)


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "mnist": Preset(
            "binarised MNIST 28x28, an MLP VAE (z = 32, hidden 512), test NLL by IWAE k = 5000",
            dict(
                dataset="mnist",
                hidden=512,
                latent_dim=32,
                epochs=200,
                eval_every=10,
                iwae_samples=5000,
                iwae_trend=(1, 5, 50),
                companions=False,
                threads=2,
            ),
            anchor="Burda et al. 2016, one stochastic layer: VAE 86.76 nats, IWAE (k = 50) 84.78",
            report=("elbo_nll", "iwae_nll_k1", "iwae_nll_k5", "iwae_nll_k50", "active_units"),
        )
    }

    dataset: str = arg("digits", "training images", choices=tuple(NATIVE_SIZE))
    image_dir: str = arg(
        "", "train on your own folder of images instead (RGB; sub-folders = classes)"
    )
    image_size: int = arg(
        0, "image side (default 0: 8 digits, 28 MNIST, 32 for --image-dir)", min=0
    )
    arch: str = arg("mlp", "encoder and decoder networks", choices=ARCHS)
    likelihood: str = arg(
        "bernoulli",
        "p(x|z); bernoulli binarises the images (a fresh draw each step)",
        choices=LIKELIHOODS,
    )
    latent_dim: int = arg(8, "size of the latent z", min=1)
    hidden: int = arg(256, "MLP hidden width, or channels of the last conv layer", min=2)
    beta: float = arg(1.0, "weight of the KL term in the training loss (beta-VAE)", min=0)
    conditional: bool = arg(
        False, "a conditional VAE: encoder and decoder also see the class (default: off)"
    )
    epochs: int = arg(150, "passes over the training images", min=1)
    batch_size: int = arg(
        128, "images per step: the global batch, split over torchrun processes", min=1
    )
    lr: float = arg(1e-3, "Adam learning rate (for the global batch)", min=0, min_inclusive=False)
    eval_every: int = arg(10, "epochs between test-set ELBO evaluations and checkpoints", min=1)
    iwae_samples: int = arg(100, "k, importance samples per test image for the IWAE bound", min=1)
    iwae_trend: tuple[int, ...] = arg(
        (), "smaller k to report beside it, from the same draws (each must divide --iwae-samples)"
    )
    companions: bool = arg(
        True, "also train a 2-D latent VAE and a conditional VAE for figures (default: on)"
    )
    threads: int = arg(
        1, "torch CPU threads; one is fastest for these small models (0: all)", min=0
    )
    precision: str = arg("auto", PRECISION_HELP, choices=PRECISIONS)

    def check(self):
        if self.image_dir and self.dataset != "digits":
            raise UserError("--image-dir replaces --dataset: give one of them")
        for k in self.iwae_trend:
            if k < 1 or self.iwae_samples % k:
                raise UserError(
                    f"--iwae-trend {k} does not divide --iwae-samples {self.iwae_samples}"
                )


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """Tiny models, four epochs on a slice of the data, a checkpoint every two."""
    return replace(cfg, hidden=16, epochs=4, eval_every=2, iwae_samples=6, iwae_trend=(1, 3))


def image_shape(cfg: TrainConfig) -> tuple[int, int]:
    """(channels, side) of the images the models will see."""
    size = cfg.image_size or (FOLDER_SIZE if cfg.image_dir else NATIVE_SIZE[cfg.dataset])
    if cfg.arch == "conv" and size % 4:
        raise UserError(
            f"--arch conv needs an image side divisible by 4, got {size} (--image-size)"
        )
    return (3 if cfg.image_dir else IMAGE_DATASETS[cfg.dataset].channels), size


def check_memory(cfg: TrainConfig, size: int, channels: int, device) -> None:
    """Before anything is allocated: up to three models' weights, gradients and Adam's two
    moments; the images (and a binarised test copy); the activations of one training batch and
    one evaluation pass, twice over for the backward pass."""
    model_cfg = VAEConfig(channels, size, cfg.arch, cfg.likelihood, cfg.latent_dim, cfg.hidden)
    n_params = count_parameters(lambda: VAE(model_cfg))
    pixels = channels * size**2
    hidden_units = 2 * (3 * cfg.hidden * size**2 // 16 if cfg.arch == "conv" else 2 * cfg.hidden)
    rows = cfg.batch_size + max(EVAL_ROWS, cfg.iwae_samples)
    images = 2 * count_images(cfg.dataset, cfg.image_dir) * pixels
    n_bytes = 4 * (3 * 4 * n_params + images + 2 * rows * (2 * pixels + hidden_units))
    flags = f"--hidden {cfg.hidden} --latent-dim {cfg.latent_dim} --image-size {size} "
    flags += f"--batch-size {cfg.batch_size} --iwae-samples {cfg.iwae_samples}"
    check_fits_in_memory(n_bytes, flags, device)


@torch.no_grad()
def evaluate(model, x, y, ks: tuple[int, ...], seed: int) -> dict:
    """Test-set means, in nats per image: the ELBO, the KL, and IWAE_k for every k in ks.

    One set of max(ks) draws per image serves every k (see iwae_bound). The draws come from a
    generator of their own (seeded), so evaluating leaves the training's random stream
    untouched: a resumed run continues exactly as an unbroken one.
    """
    model.eval()
    n_samples = max(ks)
    chunk = max(1, EVAL_ROWS // n_samples)  # images per pass
    sums = dict.fromkeys(("elbo", "kl", *ks), 0.0)
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in progress(range(0, len(x), chunk), desc=f"test bounds, k={n_samples}"):
            xb, yb = x[i : i + chunk], None if y is None else y[i : i + chunk]
            log_w, log_px_z, kl = model.importance_log_weights(xb, n_samples, yb)  # (S, B)
            sums["elbo"] += (log_px_z.mean(0) - kl).double().sum().item()
            sums["kl"] += kl.double().sum().item()
            for k in ks:
                sums[k] += iwae_bound(log_w, k).double().sum().item()
    model.train()
    return {key: total / len(x) for key, total in sums.items()}


@torch.no_grad()
def active_units(model, x, y, threshold: float = 0.01) -> int:
    """Latent dimensions in use: Cov_x(E_q[z_u]) > 0.01 (Burda et al., 2016, section 5.2).

    A dimension whose posterior mean is the same for every image carries no information about
    x: its q(z_u|x) has collapsed onto the prior.
    """
    mu, _ = model.encode(x, y)  # (N, L)
    return int((mu.var(0) > threshold).sum())


def load_data(cfg: TrainConfig, size: int, device):
    """Train and test images (N, C, size, size) in [0, 1] and labels, on the device; for the
    Bernoulli likelihood the test images binarised once, with a generator of their own."""
    x_train, y_train, x_test, y_test, class_names = load_dataset(
        cfg.dataset, cfg.image_dir, size, cfg.data_dir, cfg.seed
    )
    if cfg.dry_run:
        x_train, y_train, x_test, y_test = x_train[:256], y_train[:256], x_test[:64], y_test[:64]
    x_train, x_test = torch.from_numpy(x_train).to(device), torch.from_numpy(x_test).to(device)
    y_train, y_test = torch.from_numpy(y_train).to(device), torch.from_numpy(y_test).to(device)
    if cfg.likelihood == "bernoulli":
        g = torch.Generator(device="cpu").manual_seed(cfg.seed)
        x_test = torch.bernoulli(x_test.cpu(), generator=g).to(device)
    return x_train, y_train, x_test, y_test, class_names


def model_configs(cfg: TrainConfig, channels: int, size: int, n_classes: int) -> dict:
    """The model asked for, then (with --companions) a 2-D latent VAE and a conditional VAE."""
    model_cfg = VAEConfig(
        image_channels=channels,
        image_size=size,
        arch=cfg.arch,
        likelihood=cfg.likelihood,
        latent_dim=cfg.latent_dim,
        hidden=cfg.hidden,
        n_classes=n_classes if cfg.conditional else 0,
        beta=cfg.beta,
    )
    configs = {"model": model_cfg}
    if cfg.companions and cfg.latent_dim != 2:
        configs["model_2d"] = replace(model_cfg, latent_dim=2, n_classes=0)
    if cfg.companions and not cfg.conditional and n_classes > 1:
        configs["cvae"] = replace(model_cfg, n_classes=n_classes)
    return configs


def build_models(configs: dict, cfg: TrainConfig, device) -> tuple[dict, dict]:
    """Each model, initialised from the same seed, and its Adam optimizer."""
    models = {}
    for name, model_cfg in configs.items():
        torch.manual_seed(cfg.seed)
        models[name] = VAE(model_cfg).to(device)
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=cfg.lr) for name, m in models.items()}
    return models, optimizers


def final_results(model, x, y, cfg: TrainConfig, name: str) -> dict:
    """-ELBO, -IWAE_k (k = --iwae-samples, and each k of --iwae-trend), KL and active units."""
    ks = tuple(sorted({*cfg.iwae_trend, cfg.iwae_samples}))
    bounds = evaluate(model, x, y, ks, cfg.seed)
    trend = ", ".join(f"k={k} {-bounds[k]:.2f}" for k in ks)
    print(f"{name}: test -ELBO {-bounds['elbo']:.2f}, IWAE NLL {trend} nats")
    return {
        "elbo_nll": -bounds["elbo"],
        "iwae_nll": -bounds[cfg.iwae_samples],
        **{f"iwae_nll_k{k}": -bounds[k] for k in ks if k != cfg.iwae_samples},
        "kl": bounds["kl"],
        "active_units": active_units(model.eval(), x, y),
    }


def check_split(dist, n_train: int, batch_size: int) -> None:
    """Under torchrun every batch, the last partial one too, splits evenly over the processes."""
    last = n_train % batch_size
    if dist.enabled and (batch_size % dist.world_size or last % dist.world_size):
        raise UserError(
            f"--batch-size {batch_size} over {n_train} images leaves batches of "
            f"{batch_size} and {last or batch_size}: each must be a multiple of the "
            f"{dist.world_size} processes"
        )


def train_epoch(models, optimizers, x_train, y_train, order, cfg: TrainConfig, dist, amp):
    """One pass in the order given; every model takes a step on each batch. Returns the mean
    training loss of each. Randomness (binarisation, reparameterisation noise) is drawn for the
    whole global batch and each process keeps its share, so N processes compute what one does."""
    totals = dict.fromkeys(models, 0.0)
    for i in range(0, len(order), cfg.batch_size):
        index = order[i : i + cfg.batch_size]
        xb, yb = x_train[index], y_train[index]
        if cfg.likelihood == "bernoulli":  # dynamic binarisation: a fresh x ~ Bernoulli(grey)
            xb = torch.bernoulli(xb)
        xb, yb = dist.shard(xb), dist.shard(yb)
        for name, model in models.items():
            raw = dist.unwrap(model)
            eps = torch.randn(len(index), raw.cfg.latent_dim, device=xb.device)  # (B, L)
            with amp.autocast():
                _, loss = model(xb, yb if raw.cfg.n_classes else None, eps=dist.shard(eps))
            optimizers[name].zero_grad(set_to_none=True)
            amp.backward(loss)  # DDP averages the processes' gradients: the global batch mean
            amp.step(optimizers[name])
            totals[name] += loss.item() * len(index)
    return {name: dist.all_reduce_mean(total / len(order)) for name, total in totals.items()}


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    ckpt = load_for_resume(cfg, PROJECT, CHECKPOINT, must_match=MUST_MATCH)
    set_threads(cfg.threads)
    dist = init_distributed(cfg.device)
    seed_everything(cfg.seed)  # alike on every process: the random draws are the global batch's
    device = dist.device
    amp = mixed_precision(cfg.precision, device)
    channels, size = image_shape(cfg)
    check_memory(cfg, size, channels, device)

    # 1. Data: float images in [0, 1]; the Bernoulli model sees a binarised test set (fixed draw).
    x_train, y_train, x_test, y_test, class_names = load_data(cfg, size, device)
    check_split(dist, len(x_train), cfg.batch_size)
    source = f"folder {cfg.image_dir}" if cfg.image_dir else cfg.dataset

    # 2. Models: the one asked for, and the companions for the figures it cannot draw itself.
    configs = model_configs(cfg, channels, size, len(class_names))
    run = start_run(f"{cfg.arch} VAE on {source}", cfg, PROJECT, is_main=dist.is_main)
    models, optimizers = build_models(configs, cfg, device)
    data_order = torch.Generator().manual_seed(cfg.seed)  # the shuffle of each epoch
    scaler = {"scaler": amp.scaler} if amp.scaler else {}  # fp16 only
    state = TrainingState(
        run.path / CHECKPOINT,
        cfg,
        log_key="epoch",
        dist=dist,
        data_order=data_order,
        **models,
        **{f"{name}_optimizer": opt for name, opt in optimizers.items()},
        **scaler,
    )  # the global torch generator (binarisation, reparameterisation noise) is kept too
    start = state.restore(ckpt)
    labels_for = {name: y_test if m.cfg.n_classes else None for name, m in models.items()}
    inference_needs = dict(  # saved beside the training state
        configs={name: asdict(c) for name, c in configs.items()},
        data={"source": source, "class_names": class_names},
    )
    wrapped = {name: dist.wrap(model) for name, model in models.items()}

    # 3. Training: Adam on the negative (beta-)ELBO; test ELBO and a checkpoint every few epochs.
    for epoch in progress(range(start, cfg.epochs), desc="epochs", disable=not dist.is_main):
        order = torch.randperm(len(x_train), generator=data_order).to(device)
        losses = train_epoch(wrapped, optimizers, x_train, y_train, order, cfg, dist, amp)
        record = {f"{name}_train_loss": loss for name, loss in losses.items()}
        checkpoint = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        if checkpoint and dist.is_main:  # evaluation draws from a generator of its own
            for name, model in models.items():
                bounds = evaluate(model, x_test, labels_for[name], (1,), cfg.seed)
                record[f"{name}_test_nelbo"] = -bounds["elbo"]
        run.log(epoch=epoch + 1, **record)
        if checkpoint:
            state.save(epoch + 1, **inference_needs)  # on every process; rank 0 writes
    pixels = channels * size**2
    metrics = {}  # only rank 0 measures and draws
    if dist.is_main:
        metrics = finish(run, models, x_test, y_test, labels_for, class_names, cfg, pixels)
    dist.close()
    return metrics


def finish(run, models, x_test, y_test, labels_for, class_names, cfg, pixels: int) -> dict:
    """4. Test log-likelihood: ELBO and IWAE_k (for the CVAE these bound log p(x|y)); figures."""
    results = {
        name: final_results(model, x_test, labels_for[name], cfg, name)
        for name, model in models.items()
    }
    report.write_figures(run.path, models, x_test, y_test, class_names, cfg.seed)

    # 5. Summary: value = IWAE estimate of -log p(x); iwae_nll <= elbo_nll.
    main_result = results.pop("model")
    companions = {f"{name}_{key}": v for name, r in results.items() for key, v in r.items()}
    return run.finish(
        metric="iwae_nll",
        value=main_result.pop("iwae_nll"),
        higher_is_better=False,
        **main_result,
        iwae_samples=cfg.iwae_samples,
        epochs=cfg.epochs,
        test_images=len(x_test),
        pixels=pixels,
        **companions,
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
