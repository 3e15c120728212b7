"""Sample from a trained GAN: a grid of images (or a scatter of 2-D points), a class on demand,
or walks through latent space. Reads what train.py (model.pt) or gan2d.py (model.npz) wrote.

    python inference.py                                # runs/latest, 64 samples -> generated.png
    python inference.py --num 100 --out grid.png
    python inference.py --class 7                      # conditional models: one class
    python inference.py --interpolate                  # rows of latent walks (image GANs)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.cli import arg, cli_main
from shared.errors import CheckpointError, UserError
from shared.logging import latest_run

PROJECT = Path(__file__).parent
WALK_STEPS = 8  # images per latent walk


@dataclass
class InferenceConfig:
    checkpoint: str = arg("", "model.pt or model.npz (default: the one in runs/latest)")
    num: int = arg(64, "samples to draw (with --interpolate: images, 8 per walk)", min=1)
    out: str = arg("", "output PNG (default: generated.png beside the checkpoint)")
    class_: int = arg(-1, "conditional models: the class to draw (-1: every class in turn)")
    interpolate: bool = arg(False, "image GANs: walk between random latents (slerp) instead")
    seed: int = arg(0, "seed of the latents", min=0)
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int = arg(0, "torch CPU threads (0: torch's default, as in train.py)", min=0)


def find_checkpoint(cfg: InferenceConfig) -> Path:
    if cfg.checkpoint:
        return Path(cfg.checkpoint)
    run = latest_run(PROJECT)
    for name in ("model.pt", "model.npz"):
        if (run / name).exists():
            return run / name
    raise CheckpointError(
        f"no model.pt or model.npz in {run} (train first: python train.py or python gan2d.py)"
    )


def sample_points(cfg: InferenceConfig, path: Path, out: Path) -> str:
    """The NumPy GAN: a scatter of generated 2-D points."""
    from gan2d import GAN2D, GAN2DConfig

    from shared.plots import save_figure
    from shared.state import read_state

    if cfg.interpolate or cfg.class_ != -1:
        raise UserError("--interpolate and --class apply to image GAN checkpoints (model.pt)")
    ckpt = read_state(path, required=("model", "config", "train_config"))
    try:
        config = GAN2DConfig(**ckpt["config"])
        model = GAN2D(config, np.random.default_rng(0))
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit the model ({err})") from None
    z = np.random.default_rng(cfg.seed).standard_normal((cfg.num, config.z_dim))
    points = model.sample(z)  # (num, 2)

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(points[:, 0], points[:, 1], s=4, c="orange")
    ax.set_aspect("equal")
    toy = ckpt["train_config"].get("toy", "2-D")
    ax.set_title(f"{cfg.num} samples of the NumPy GAN ({toy})", fontsize=9)
    save_figure(fig, out)
    return f"wrote {cfg.num} generated points to {out}"


def sample_images(cfg: InferenceConfig, path: Path, out: Path) -> str:
    """An image GAN: a grid of samples, one class, or latent walks."""
    import torch
    from model import GANConfig, ImageGAN, latent_walk

    from shared.checkpoint import load_checkpoint, load_model_state
    from shared.plots import save_image_grid
    from shared.runtime import get_device, set_threads

    set_threads(cfg.threads)
    device = get_device(cfg.device)
    state = load_checkpoint(path, required=("model", "config"))
    try:
        config = GANConfig(**state["config"])
        gan = ImageGAN(config)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} has an unusable config ({err})") from None
    load_model_state(gan, state["model"], path)
    gan.to(device).eval()
    K = config.n_classes
    if cfg.class_ != -1 and not K:
        raise UserError(f"--class needs a conditional model; {path} was trained without classes")
    if K and not -1 <= cfg.class_ < K:
        raise UserError(f"--class must be between 0 and {K - 1}, got {cfg.class_}")
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.interpolate:
        n_walks = max(1, cfg.num // WALK_STEPS)
        ends = torch.randn(n_walks, 2, config.z_dim, generator=generator)
        z = torch.cat([latent_walk(a, b, WALK_STEPS) for a, b in ends])  # (n_walks*8, Z)
        # one class per walk (conditional models), so the walk shows one digit changing style
        default_labels = torch.arange(n_walks).repeat_interleave(WALK_STEPS) % max(K, 1)
    else:
        z = torch.randn(cfg.num, config.z_dim, generator=generator)
        default_labels = torch.arange(cfg.num) % max(K, 1)
    if not K:
        labels = None
    elif cfg.class_ >= 0:
        labels = torch.full((len(z),), cfg.class_).to(device)
    else:
        labels = default_labels.to(device)
    images = gan.sample(z.to(device), labels)
    save_image_grid(out, images.cpu(), nrow=WALK_STEPS if cfg.interpolate else None)
    what = "latent walks" if cfg.interpolate else "samples"
    which = f" of class {cfg.class_}" if cfg.class_ >= 0 else ""
    return f"wrote {len(z)} {config.model} {what}{which} to {out}"


def main(cfg: InferenceConfig) -> None:
    path = find_checkpoint(cfg)
    out = Path(cfg.out) if cfg.out else path.parent / "generated.png"
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file, got {out}")
    if path.suffix == ".npz":
        print(sample_points(cfg, path, out))
    else:
        print(sample_images(cfg, path, out))


if __name__ == "__main__":
    cli_main(main, InferenceConfig)
