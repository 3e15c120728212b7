"""Use a trained VAE: draw from the prior, reconstruct an image, interpolate between two images,
or draw images of one class from a conditional VAE. Each writes one PNG.

    python inference.py                              # 16 samples from runs/latest/model.pt
    python inference.py --sample 64
    python inference.py --reconstruct my_digit.png --invert
    python inference.py --interpolate a.png b.png
    python inference.py --class 3                    # the conditional VAE of the same run
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from data import read_image
from model import VAE, VAEConfig

from shared.checkpoint import load_model_state
from shared.cli import arg, cli_main
from shared.errors import CheckpointError, UserError
from shared.logging import default_checkpoint
from shared.plots import images_to_grid, save_image
from shared.runtime import get_device, seed_everything, set_threads
from shared.state import read_state

PROJECT = Path(__file__).parent


@dataclass
class InferenceConfig:
    checkpoint: str = arg("", "checkpoint written by train.py (default: runs/latest/model.pt)")
    sample: int = arg(16, "draw N images from the prior (the mode when no other is given)", min=1)
    reconstruct: str = arg("", "an image file to encode and decode")
    interpolate: tuple[str, ...] = arg((), "two image files: decode the line between their codes")
    class_: int = arg(
        -1,
        "draw --sample N images of this class from the run's conditional VAE (default: -1, off)",
        min=-1,
    )
    invert: bool = arg(
        False, "read images as 1 - pixel, for dark ink on light paper (default: off)"
    )
    steps: int = arg(10, "images along an interpolation", min=2)
    out: str = arg("", "output PNG (default: inference_<mode>.png beside the checkpoint)")
    seed: int = arg(0, "random seed", min=0)
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int = arg(
        1, "torch CPU threads; one is fastest for these small models (0: all)", min=0
    )

    def check(self):
        modes = [bool(self.reconstruct), bool(self.interpolate), self.class_ >= 0]
        if sum(modes) > 1:
            raise UserError("choose one of --reconstruct, --interpolate and --class")
        if self.interpolate and len(self.interpolate) != 2:
            raise UserError(f"--interpolate takes two image files, got {len(self.interpolate)}")


def load_vae(path: Path, device, conditional: bool):
    """A model of the run and the data description stored beside the weights: the main model,
    or with `conditional` the conditional one (the main model if it is one, else `cvae`)."""
    ckpt = read_state(path, required=("model", "configs", "data"))
    configs = ckpt["configs"]
    name = "model"
    if conditional and not configs["model"]["n_classes"]:
        if "cvae" not in configs:
            raise UserError(
                f"{path} holds no conditional VAE; --class needs one "
                "(train.py trains one unless --no-companions, or use train.py --conditional)"
            )
        name = "cvae"
    try:
        cfg = VAEConfig(**configs[name])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} has an unusable config ({err})") from None
    model = VAE(cfg).to(device)
    load_model_state(model, ckpt[name], path)
    return model.eval(), ckpt["data"]


def read_input(path: str, cfg: VAEConfig, invert: bool, device):
    x = read_image(path, cfg.image_channels, cfg.image_size)  # (C, H, W) in [0, 1]
    x = 1.0 - x if invert else x
    return torch.from_numpy(x)[None].to(device)  # (1, C, H, W)


def save_grid(path: Path, images, nrow: int, size: int) -> None:
    save_image(path, images_to_grid(images, nrow=nrow), scale=max(1, 64 // size))
    print(f"wrote {path}")


@torch.no_grad()
def main(cfg: InferenceConfig) -> None:
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = get_device(cfg.device)
    path = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint(PROJECT, "model.pt")
    model, data = load_vae(path, device, conditional=cfg.class_ >= 0)
    size = model.cfg.image_size

    def output(mode: str) -> Path:
        return Path(cfg.out) if cfg.out else path.parent / f"inference_{mode}.png"

    if cfg.reconstruct:
        x = read_input(cfg.reconstruct, model.cfg, cfg.invert, device)
        if model.cfg.n_classes:
            raise UserError(f"{path} is a conditional VAE: reconstruct with an unconditional one")
        mu, _ = model.encode(x)
        recon = model.mean_image(model.decode(mu))  # decode the posterior mean
        print(f"q(z|x) mean: {np.round(mu[0].cpu().numpy(), 3).tolist()}")
        save_grid(output("reconstruction"), torch.cat([x, recon]), nrow=2, size=size)
    elif cfg.interpolate:
        if model.cfg.n_classes:
            raise UserError(f"{path} is a conditional VAE: interpolate with an unconditional one")
        x_a, x_b = (read_input(p, model.cfg, cfg.invert, device) for p in cfg.interpolate)
        mu_a, mu_b = model.encode(x_a)[0], model.encode(x_b)[0]  # (1, L) each
        t = torch.linspace(0, 1, cfg.steps, device=device)[:, None]  # (T, 1)
        decoded = model.mean_image(model.decode((1 - t) * mu_a + t * mu_b))  # (T, C, H, W)
        row = torch.cat([x_a, decoded, x_b])
        save_grid(output("interpolation"), row, nrow=len(row), size=size)
    else:
        n = cfg.sample
        y = None
        if model.cfg.n_classes:
            names = data["class_names"]
            if cfg.class_ >= model.cfg.n_classes:
                raise UserError(
                    f"--class must be below {model.cfg.n_classes} "
                    f"(classes: {', '.join(names)}), got {cfg.class_}"
                )
            k = max(cfg.class_, 0)
            y = torch.full((n,), k, dtype=torch.long, device=device)
            print(f"class {k}: {names[k]}")
        mode = "samples" if y is None else f"class_{int(y[0])}"
        save_grid(output(mode), model.sample(n, y), nrow=int(np.ceil(np.sqrt(n))), size=size)


if __name__ == "__main__":
    cli_main(main, InferenceConfig)
