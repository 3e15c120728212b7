"""The figures of a run: loss curves, reconstructions, prior samples, the latent space, the
2-D manifold, interpolations and samples of each class.

Kept out of train.py so that the training loop reads in one screen; the curves come from the
run folder's log.jsonl, the pictures from the trained models.
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import torch

from shared.logging import read_log
from shared.plots import images_to_grid, plot_curves, save_figure, save_image


def scale_for(size: int) -> int:
    """Enlarge small images so an 8x8 digit is still visible in the README."""
    return max(1, 64 // size)


def save_grid(path: Path, images, nrow: int) -> None:
    save_image(path, images_to_grid(images, nrow=nrow), scale=scale_for(images.shape[-1]))


def loss_figure(path: Path, run_path: Path, names) -> None:
    """Training loss (-ELBO, beta-weighted) every epoch, test -ELBO at each evaluation."""
    records = read_log(run_path)
    curves = {}
    for name in names:
        for key, label in (("train_loss", "train -ELBO"), ("test_nelbo", "test -ELBO")):
            field = f"{name}_{key}"
            kept = [r for r in records if field in r]
            curves[f"{name} {label}"] = ([r["epoch"] for r in kept], [r[field] for r in kept])
    plot_curves(path, curves, xlabel="epoch", ylabel="nats per image")


@torch.no_grad()
def reconstruction_figure(path, model, x, y):
    recon = model.mean_image(model.decode(model.encode(x, y)[0], y))  # decode the posterior mean
    save_grid(path, torch.cat([x, recon]), nrow=len(x))  # inputs on top, reconstructions below


@torch.no_grad()
def interpolation_figure(path, model, x_a, x_b, steps: int = 10):
    """Decode (1 - t) mu_a + t mu_b for t from 0 to 1: one row per pair, the inputs at the ends."""
    mu_a, mu_b = model.encode(x_a)[0], model.encode(x_b)[0]  # (P, L)
    t = torch.linspace(0, 1, steps, device=x_a.device)[None, :, None]  # (1, T, 1)
    z = (1 - t) * mu_a[:, None] + t * mu_b[:, None]  # (P, T, L)
    decoded = model.mean_image(model.decode(z.flatten(0, 1))).view(len(x_a), steps, *x_a.shape[1:])
    rows = torch.cat([x_a[:, None], decoded, x_b[:, None]], dim=1).flatten(0, 1)
    save_grid(path, rows, nrow=steps + 2)


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
def class_samples_figure(path, model, n_classes: int, per_class: int = 10):
    y = torch.arange(n_classes, device=model.encoder.head.weight.device)
    samples = model.sample(n_classes * per_class, y.repeat_interleave(per_class))  # a row per class
    save_grid(path, samples, nrow=per_class)


def write_figures(run_path: Path, models: dict, x_test, y_test, class_names, seed: int) -> None:
    """loss.png, reconstructions.png and samples.png of the main model; latent.png and
    interpolation.png when it is unconditional; manifold.png from the model with a 2-D latent
    and class_samples.png from the conditional one, where the run trained them."""
    loss_figure(run_path / "loss.png", run_path, models)
    main = models["model"]
    conditional = main.cfg.n_classes > 0
    n_show = min(16, len(x_test))
    y_show = y_test[:n_show] if conditional else None
    reconstruction_figure(run_path / "reconstructions.png", main, x_test[:n_show], y_show)
    torch.manual_seed(seed)
    y_prior = torch.arange(64, device=x_test.device) % len(class_names) if conditional else None
    save_grid(run_path / "samples.png", main.sample(64, y_prior), nrow=8)
    labels = y_test.cpu().numpy()
    if not conditional:
        latent_figure(run_path / "latent.png", main, x_test, labels, class_names)
        n_pairs = min(6, len(x_test) // 2)
        x_a, x_b = x_test[:n_pairs], x_test[n_pairs : 2 * n_pairs]
        interpolation_figure(run_path / "interpolation.png", main, x_a, x_b)
    two_d = [m for m in models.values() if m.cfg.latent_dim == 2 and not m.cfg.n_classes]
    if two_d:
        manifold_figure(run_path / "manifold.png", two_d[0], x_test, labels, class_names)
    with_classes = [m for m in models.values() if m.cfg.n_classes]
    if with_classes:
        class_samples_figure(run_path / "class_samples.png", with_classes[0], len(class_names))
