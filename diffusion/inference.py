"""Generate images from a trained diffusion model: a grid, and on request a GIF of the
reverse process.

python inference.py                                   # 64 samples from runs/latest/model.pt
python inference.py --num 16 --sampler ddim --steps 50 --eta 0
python inference.py --class 3 --guidance 3 --out threes.png
python inference.py --sampler ddpm --gif reverse.gif
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from model import UNet, UNetConfig

from diffusion import VARIANCES, GaussianDiffusion, to_unit
from shared.checkpoint import load_model_state
from shared.cli import arg, cli_main
from shared.errors import CheckpointError, UserError
from shared.logging import default_checkpoint
from shared.plots import images_to_grid, save_gif, save_image_grid
from shared.runtime import get_device, seed_everything, set_threads
from shared.state import read_state

PROJECT_DIR = Path(__file__).parent


@dataclass
class InferenceConfig:
    checkpoint: str = arg("", "checkpoint to sample from (default: runs/latest/model.pt)")
    num: int = arg(64, "number of images", min=1)
    sampler: str = arg("ddim", "DDIM, or ancestral DDPM (all T steps)", choices=("ddpm", "ddim"))
    steps: int = arg(50, "DDIM steps", min=1)
    eta: float = arg(0.0, "DDIM noise: 0 deterministic, 1 DDPM-like", min=0, max=1)
    variance: str = arg("fixed_small", "DDPM reverse variance", choices=VARIANCES)
    clip: bool = arg(True, "clip every x_0 estimate to [-1, 1]")
    class_: int = arg(-1, "generate this class (-1: unconditional)", min=-1)
    guidance: float = arg(1.0, "classifier-free guidance weight w (with --class)", min=0)
    raw_weights: bool = arg(False, "use the last step's weights instead of their moving average")
    out: str = arg("", "grid PNG to write (default: samples_inference.png beside the checkpoint)")
    gif: str = arg("", "also write the reverse process of the grid as this GIF")
    seed: int = arg(0, "random seed", min=0)
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int = arg(1, "torch CPU threads (0: torch's default)", min=0)


def load_model(path: Path, device, raw_weights: bool = False):
    """The U-Net and diffusion process a train.py checkpoint describes."""
    ckpt = read_state(path, required=("model", "ema", "train_config", "unet"))
    ucfg = dict(ckpt["unet"])
    ucfg["channel_mults"] = tuple(ucfg["channel_mults"])
    ucfg["attention_resolutions"] = tuple(ucfg["attention_resolutions"])
    try:
        model = UNet(UNetConfig(**ucfg)).to(device)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} has an unusable U-Net config ({err})") from None
    load_model_state(model, ckpt["model"] if raw_weights else ckpt["ema"], path)
    train_cfg = ckpt["train_config"]
    diffusion = GaussianDiffusion(
        train_cfg["timesteps"], train_cfg["schedule"], train_cfg["prediction"], device
    )
    return model.eval(), diffusion


def main(cfg: InferenceConfig) -> Path:
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    device = get_device(cfg.device)
    path = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint(PROJECT_DIR, "model.pt")
    model, diffusion = load_model(path, device, cfg.raw_weights)
    ucfg = model.config
    if cfg.class_ >= 0 and ucfg.num_classes == 0:
        raise UserError("--class needs a class-conditional model (this one was trained without)")
    if cfg.class_ >= ucfg.num_classes > 0:
        raise UserError(
            f"--class {cfg.class_} out of range: the model knows 0..{ucfg.num_classes - 1}"
        )
    if cfg.sampler == "ddim" and cfg.steps > diffusion.T:
        raise UserError(f"--steps {cfg.steps} > the model's T = {diffusion.T}")

    y = None
    if cfg.class_ >= 0:
        y = torch.full((cfg.num,), cfg.class_, dtype=torch.long, device=device)
    n_steps = diffusion.T if cfg.sampler == "ddpm" else cfg.steps
    shape = (cfg.num, ucfg.in_channels, ucfg.image_size, ucfg.image_size)
    samples, frames = diffusion.sample(
        model,
        shape,
        cfg.sampler,
        cfg.steps,
        cfg.eta,
        y=y,
        guidance=cfg.guidance,
        variance=cfg.variance,
        generator=torch.Generator(device).manual_seed(cfg.seed),
        device=device,
        keep_every=max(1, n_steps // 40) if cfg.gif else 0,
        clip=cfg.clip,
    )

    out = Path(cfg.out) if cfg.out else path.parent / "samples_inference.png"
    save_image_grid(out, to_unit(samples), nrow=int(np.ceil(np.sqrt(cfg.num))))
    print(f"{cfg.num} samples ({cfg.sampler}, {n_steps} steps) -> {out}")
    if cfg.gif:
        grids = [images_to_grid(to_unit(f), nrow=int(np.ceil(np.sqrt(cfg.num)))) for f in frames]
        save_gif(cfg.gif, grids + grids[-1:] * 10, duration_ms=80, scale=4)
        print(f"reverse process ({len(frames)} frames) -> {cfg.gif}")
    return out


if __name__ == "__main__":
    cli_main(main, InferenceConfig)
