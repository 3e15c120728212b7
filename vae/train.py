"""Train a variational autoencoder, then measure its test log-likelihood with the ELBO and the
importance-weighted bound (IWAE, k samples), in nats per image.

    python train.py                                   # MLP VAE on the embedded 8x8 digits
    python train.py --arch conv --beta 4              # a convolutional beta-VAE
    python train.py --dataset mnist --epochs 30       # real MNIST (binarised, 28x28)
    python train.py --image-dir my_photos --likelihood continuous-bernoulli --arch conv

Besides the model you ask for, the default run trains two small companions for the figures
that need them: a VAE with a 2-D latent (the decoded manifold) and a conditional VAE (samples
of each class). --no-companions skips them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import torch
from data import load_dataset
from model import ARCHS, LIKELIHOODS, VAE, VAEConfig, gaussian_kl

from shared.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from shared.cli import RunConfig, arg, cli_main
from shared.errors import CheckpointError, UserError
from shared.logging import progress, start_run
from shared.plots import images_to_grid, plot_curves, save_figure, save_image
from shared.runtime import get_device, seed_everything, set_threads

PROJECT = Path(__file__).parent
NATIVE_SIZE = {"digits": 8, "mnist": 28, "fashion-mnist": 28}
FOLDER_SIZE = 32


@dataclass
class TrainConfig(RunConfig):
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
    batch_size: int = arg(128, "images per step", min=1)
    lr: float = arg(1e-3, "Adam learning rate", min=0, min_inclusive=False)
    eval_every: int = arg(10, "epochs between test-set ELBO evaluations and checkpoints", min=1)
    iwae_samples: int = arg(100, "k, importance samples per test image for the IWAE bound", min=1)
    companions: bool = arg(
        True, "also train a 2-D latent VAE and a conditional VAE for figures (default: on)"
    )
    threads: int = arg(
        1, "torch CPU threads; one is fastest for these small models (0: all)", min=0
    )

    def check(self):
        if self.image_dir and self.dataset != "digits":
            raise UserError("--image-dir replaces --dataset: give one of them")


@torch.no_grad()
def evaluate(model, x, y, n_samples: int, seed: int, batch_size: int = 100):
    """Test-set means of the ELBO and IWAE_k, in nats per image, plus the mean KL.

    Its random draws come from a generator of their own (seeded), so evaluating leaves the
    training's random stream untouched: a resumed run continues exactly as an unbroken one.
    """
    model.eval()
    elbo, iwae, kl = [], [], []
    chunk = max(1, batch_size * 100 // n_samples)  # about 10,000 decoder passes at a time
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(x), chunk):
            xb, yb = x[i : i + chunk], None if y is None else y[i : i + chunk]
            e, w = model.bounds(xb, n_samples, yb)
            elbo.append(e)
            iwae.append(w)
            kl.append(gaussian_kl(*model.encode(xb, yb)))
    model.train()
    return torch.cat(elbo).mean().item(), torch.cat(iwae).mean().item(), torch.cat(kl).mean().item()


@torch.no_grad()
def active_units(model, x, y, threshold: float = 0.01) -> int:
    """Latent dimensions in use: Cov_x(E_q[z_u]) > 0.01 (Burda et al., 2016, section 5.2).

    A dimension whose posterior mean is the same for every image carries no information about
    x: its q(z_u|x) has collapsed onto the prior.
    """
    mu, _ = model.encode(x, y)  # (N, L)
    return int((mu.var(0) > threshold).sum())


def fit(model, data, cfg: TrainConfig, path: Path, run, name: str, data_info: dict) -> dict:
    """Adam on the negative (beta-)ELBO; test ELBO and a checkpoint every eval_every epochs.

    With --resume, continues from the checkpoint at `path` if one is there.
    """
    x_train, y_train, x_test, y_test = data
    conditional = model.cfg.n_classes > 0
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history = {"epoch": [], "train_loss": [], "test_nelbo": []}
    start = 0
    if cfg.resume and path.exists():
        ckpt = load_checkpoint(
            path,
            required=("model", "optimizer", "epoch", "history", "rng_state"),
            map_location=x_train.device,
        )
        saved = ckpt.get("config", {})
        changed = sorted(k for k, v in asdict(model.cfg).items() if saved.get(k) != v)
        if changed:  # same shapes but another objective (e.g. --beta) would train on silently
            raise CheckpointError(
                f"checkpoint {path} was trained with other settings ({', '.join(changed)}); "
                "resume with the flags it was started with"
            )
        load_model_state(model, ckpt["model"], path)
        optimizer.load_state_dict(ckpt["optimizer"])
        start, history = ckpt["epoch"], ckpt["history"]
        torch.set_rng_state(
            ckpt["rng_state"].cpu()
        )  # the binarisation draws continue where they stopped
    binarize = model.cfg.likelihood == "bernoulli"
    running = []
    for epoch in progress(range(start, cfg.epochs), desc=name):
        # Seeded per epoch, so a resumed run sees the same batches as one that never stopped.
        g = torch.Generator(device="cpu").manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(x_train), generator=g).to(x_train.device)
        for i in range(0, len(order), cfg.batch_size):
            index = order[i : i + cfg.batch_size]
            xb = x_train[index]
            if binarize:  # dynamic binarisation: a new draw x ~ Bernoulli(grey value) each time
                xb = torch.bernoulli(xb)
            _, loss = model(xb, y_train[index] if conditional else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running.append(loss.item())
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            test_elbo, _, _ = evaluate(model, x_test, y_test if conditional else None, 1, cfg.seed)
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(float(np.mean(running)))
            history["test_nelbo"].append(-test_elbo)
            run.log(model=name, epoch=epoch + 1, train_loss=np.mean(running), test_nelbo=-test_elbo)
            running = []
            save_checkpoint(
                path,
                {
                    "model": model.state_dict(),
                    "config": asdict(model.cfg),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "rng_state": torch.get_rng_state(),
                    "data": data_info,
                },
            )
    return history


# ----------------------------------------------------------------------------- figures


def _grid_png(path, images, nrow, scale):
    save_image(path, images_to_grid(images, nrow=nrow), scale=scale)


def scale_for(size: int) -> int:
    """Enlarge small images so an 8x8 digit is still visible in the README."""
    return max(1, 64 // size)


@torch.no_grad()
def reconstruction_figure(path, model, x, y):
    recon = model.mean_image(model.decode(model.encode(x, y)[0], y))  # decode the posterior mean
    rows = torch.cat([x, recon])  # inputs on the first row, reconstructions below
    _grid_png(path, rows, nrow=len(x), scale=scale_for(x.shape[-1]))


@torch.no_grad()
def interpolation_figure(path, model, x_a, x_b, steps: int = 10):
    """Decode (1 - t) mu_a + t mu_b for t from 0 to 1: one row per pair, the inputs at the ends."""
    mu_a, mu_b = model.encode(x_a)[0], model.encode(x_b)[0]  # (P, L)
    t = torch.linspace(0, 1, steps, device=x_a.device)[None, :, None]  # (1, T, 1)
    z = (1 - t) * mu_a[:, None] + t * mu_b[:, None]  # (P, T, L)
    decoded = model.mean_image(model.decode(z.flatten(0, 1))).view(len(x_a), steps, *x_a.shape[1:])
    rows = torch.cat([x_a[:, None], decoded, x_b[:, None]], dim=1).flatten(0, 1)
    _grid_png(path, rows, nrow=steps + 2, scale=scale_for(x_a.shape[-1]))


def _latent_2d(mu: np.ndarray):
    """The means themselves for a 2-D latent, else their projection on the top 2 principal axes."""
    if mu.shape[1] == 2:
        return mu, ("z1", "z2")
    centred = mu - mu.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    points = centred @ vt[:2].T  # (N, 2), or (N, 1) when there are fewer than 2 directions
    points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    return points, ("principal axis 1", "principal axis 2")


def _scatter(ax, mu, labels, class_names):
    points, (xlabel, ylabel) = _latent_2d(mu)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for k, name in enumerate(class_names):
        chosen = labels == k
        ax.scatter(points[chosen, 0], points[chosen, 1], s=6, color=cmap(k % cmap.N), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if 1 < len(class_names) <= 20:
        ax.legend(markerscale=2, fontsize=7, loc="best")


@torch.no_grad()
def latent_figure(path, model, x, labels, class_names):
    mu = model.encode(x)[0].cpu().numpy()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    _scatter(ax, mu, labels, class_names)
    title = "q(z|x) means" if mu.shape[1] == 2 else f"q(z|x) means ({mu.shape[1]}-D, PCA)"
    ax.set_title(f"{title} of test images")
    save_figure(fig, path)


@torch.no_grad()
def manifold_figure(path, model, x, labels, class_names, n: int = 15):
    """A 2-D latent: test images' means beside the images decoded on a grid of prior quantiles."""
    mu = model.encode(x)[0].cpu().numpy()
    # Evenly spaced in probability under N(0, 1): the inverse CDF of 0.05, ..., 0.95.
    quantiles = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])
    z1, z2 = np.meshgrid(quantiles, quantiles[::-1])
    z = torch.tensor(np.stack([z1.ravel(), z2.ravel()], 1), dtype=torch.float32, device=x.device)
    grid = images_to_grid(model.mean_image(model.decode(z)), nrow=n, pad=0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
    _scatter(left, mu, labels, class_names)
    left.set_title("q(z|x) means of test images")
    extent = (quantiles[0], quantiles[-1], quantiles[0], quantiles[-1])
    right.imshow(grid, cmap="gray", extent=extent, vmin=0, vmax=1)
    right.set_title("decoded means on a grid of N(0,1) quantiles")
    right.set_xlabel("z1")
    right.set_ylabel("z2")
    save_figure(fig, path)


@torch.no_grad()
def class_samples_figure(path, model, class_names, per_class: int = 10):
    k = len(class_names)
    y = torch.arange(k, device=model.encoder.head.weight.device).repeat_interleave(per_class)
    samples = model.sample(len(y), y)  # one row per class
    _grid_png(path, samples, nrow=per_class, scale=scale_for(samples.shape[-1]))


# ----------------------------------------------------------------------------- main


def main(cfg: TrainConfig) -> dict:
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = get_device(cfg.device)
    source = f"folder {cfg.image_dir}" if cfg.image_dir else cfg.dataset
    size = cfg.image_size or (FOLDER_SIZE if cfg.image_dir else NATIVE_SIZE[cfg.dataset])
    if cfg.arch == "conv" and size % 4:
        raise UserError(
            f"--arch conv needs an image side divisible by 4, got {size} (--image-size)"
        )

    # 1. Data: float images in [0, 1]; the Bernoulli model sees a binarised test set (fixed draw).
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
    data = (x_train, y_train, x_test, y_test)

    # 2. Models: the one asked for, and the companions for the figures it cannot draw itself.
    model_cfg = VAEConfig(
        image_channels=x_train.shape[1],
        image_size=size,
        arch=cfg.arch,
        likelihood=cfg.likelihood,
        latent_dim=cfg.latent_dim,
        hidden=cfg.hidden,
        n_classes=len(class_names) if cfg.conditional else 0,
        beta=cfg.beta,
    )
    if cfg.dry_run:
        model_cfg = replace(model_cfg, hidden=16)
        cfg = replace(cfg, epochs=2, eval_every=1, iwae_samples=5)
    models = {"model": model_cfg}
    if cfg.companions and cfg.latent_dim != 2:
        models["model_2d"] = replace(model_cfg, latent_dim=2, n_classes=0)
    if cfg.companions and not cfg.conditional and len(class_names) > 1:
        models["cvae"] = replace(model_cfg, n_classes=len(class_names))

    run = start_run(f"{cfg.arch} VAE on {source}", cfg, PROJECT)
    data_info = {"source": source, "class_names": class_names}
    results, trained, histories = {}, {}, {}
    for name, mcfg in models.items():
        torch.manual_seed(cfg.seed)
        model = VAE(mcfg).to(device)
        histories[name] = fit(model, data, cfg, run.path / f"{name}.pt", run, name, data_info)
        # 3. Test log-likelihood: ELBO and IWAE_k (for the CVAE these bound log p(x|y)).
        y_eval = y_test if mcfg.n_classes else None
        elbo, iwae, kl = evaluate(model, x_test, y_eval, cfg.iwae_samples, cfg.seed)
        results[name] = {
            "elbo_nll": -elbo,
            "iwae_nll": -iwae,
            "kl": kl,
            "active_units": active_units(model, x_test, y_eval),
        }
        trained[name] = model.eval()
        print(f"{name}: test -ELBO {-elbo:.2f}, IWAE (k={cfg.iwae_samples}) NLL {-iwae:.2f} nats")

    # 4. Figures.
    main_model = trained["model"]
    curves = {}
    for name, h in histories.items():
        curves[f"{name} train -ELBO"] = (h["epoch"], h["train_loss"])
        curves[f"{name} test -ELBO"] = (h["epoch"], h["test_nelbo"])
    plot_curves(run.path / "loss.png", curves, xlabel="epoch", ylabel="nats per image")
    y_main = y_test if main_model.cfg.n_classes else None
    n_show = min(16, len(x_test))
    reconstruction_figure(
        run.path / "reconstructions.png",
        main_model,
        x_test[:n_show],
        None if y_main is None else y_main[:n_show],
    )
    torch.manual_seed(cfg.seed)
    if main_model.cfg.n_classes:
        y_prior = torch.arange(64, device=device) % len(class_names)
        samples = main_model.sample(64, y_prior)
    else:
        samples = main_model.sample(64)
    _grid_png(run.path / "samples.png", samples, nrow=8, scale=scale_for(size))
    labels = y_test.cpu().numpy()
    if not main_model.cfg.n_classes:
        latent_figure(run.path / "latent.png", main_model, x_test, labels, class_names)
        n_pairs = min(6, len(x_test) // 2)
        interpolation_figure(
            run.path / "interpolation.png",
            main_model,
            x_test[:n_pairs],
            x_test[n_pairs : 2 * n_pairs],
        )
    two_d = "model" if cfg.latent_dim == 2 and not cfg.conditional else "model_2d"
    if two_d in trained:
        manifold_figure(run.path / "manifold.png", trained[two_d], x_test, labels, class_names)
    conditional = "model" if cfg.conditional else "cvae"
    if conditional in trained:
        class_samples_figure(run.path / "class_samples.png", trained[conditional], class_names)

    # 5. Summary: value = IWAE estimate of -log p(x); iwae_nll <= elbo_nll.
    main_result = results["model"]
    extra = {
        f"{name}_{key}": value
        for name, r in results.items()
        if name != "model"
        for key, value in r.items()
    }
    return run.finish(
        metric="iwae_nll",
        value=main_result["iwae_nll"],
        higher_is_better=False,
        elbo_nll=main_result["elbo_nll"],
        kl=main_result["kl"],
        active_units=main_result["active_units"],
        iwae_samples=cfg.iwae_samples,
        epochs=cfg.epochs,
        test_images=len(x_test),
        pixels=int(math.prod(x_test.shape[1:])),
        **extra,
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
