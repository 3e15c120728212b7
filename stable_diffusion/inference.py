"""Generate images from a prompt with a trained checkpoint.

    python inference.py "a handwritten seven in the top left corner" --guidance 3 --num 8
    python inference.py "the number 3, bottom right" --negative-prompt "top left" --out out.png
    python inference.py "a handwritten two, top right" --init-image img.png --strength 0.7

The prompt must use the captions' words (digits as words or numerals, and a corner: top or
upper, bottom or lower, left, right); an unknown word is an error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from data import Tokenizer
from model import SDConfig, StableDiffusion

from shared.checkpoint import load_model_state
from shared.cli import arg, cli_main
from shared.errors import UserError
from shared.logging import default_checkpoint
from shared.plots import save_image_grid
from shared.runtime import get_device, set_threads
from shared.state import read_state

PROJECT = Path(__file__).parent


@dataclass
class InferenceConfig:
    prompt: str = arg("a handwritten seven in the top left corner", "what to draw", positional=True)
    checkpoint: str = arg("", "checkpoint (default: runs/latest/model.pt)")
    guidance: float = arg(3.0, "classifier-free guidance scale w", min=0)
    steps: int = arg(30, "DDIM steps", min=1, max=1000)
    eta: float = arg(0.0, "DDIM noise: 0 deterministic, 1 like DDPM", min=0, max=1)
    num: int = arg(8, "how many images", min=1, max=256)
    negative_prompt: str = arg("", "what to steer away from (replaces the empty prompt)")
    init_image: str = arg("", "image-to-image: start from this picture")
    strength: float = arg(
        0.7, "image-to-image: how far to noise the picture (0-1)", min=0.01, max=1
    )
    seed: int = arg(0, "random seed", min=0)
    out: str = arg("", "output PNG (default: samples_inference.png beside the checkpoint)")
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int = arg(1, "torch CPU threads (0: torch's default, one per core)", min=0)


def load_model(path: Path, device) -> tuple[StableDiffusion, Tokenizer]:
    """The model and tokenizer a checkpoint describes; vocabulary checked against ours."""
    state = read_state(path, required=("model", "config", "vocab"))
    model = StableDiffusion(SDConfig(**state["config"]))
    load_model_state(model, state["model"], path)
    tokenizer = Tokenizer(max_tokens=model.cfg.max_tokens)
    if tokenizer.vocab != list(state["vocab"]):
        raise UserError(f"checkpoint {path} was trained with another vocabulary")
    return model.to(device).eval(), tokenizer


def load_init_image(path: str, size: int) -> torch.Tensor:
    """A picture as (1, 1, size, size) grey in [0, 1], light ink on dark (inverted if needed)."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise UserError(f"init image {path} does not exist")
    try:
        with Image.open(path) as image:
            grey = image.convert("L").resize((size, size), Image.BILINEAR)
    except (UnidentifiedImageError, OSError):
        raise UserError(f"init image {path} is not an image") from None
    array = np.asarray(grey, dtype=np.float32) / 255.0
    array = 1.0 - array if array.mean() > 0.5 else array
    return torch.from_numpy(array)[None, None]


def main(cfg: InferenceConfig) -> np.ndarray:
    if not cfg.prompt.strip():
        raise UserError(
            'empty prompt: say what to draw, e.g. "a handwritten seven in the top left corner"'
        )
    set_threads(cfg.threads)
    path = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint(PROJECT, "model.pt")
    device = get_device(cfg.device)
    model, tokenizer = load_model(path, device)
    ids, mask = tokenizer.encode_batch([cfg.prompt] * cfg.num)  # unknown characters: an error
    if not tokenizer.split(cfg.prompt):
        raise UserError(f'prompt {cfg.prompt!r} has no words: say what to draw, e.g. "digit two"')
    negative, negative_mask = tokenizer.encode_batch([cfg.negative_prompt] * cfg.num)
    init_latents = None
    if cfg.init_image:
        image = load_init_image(cfg.init_image, model.cfg.image_size).to(device)
        with torch.no_grad():
            init_latents = model.to_latent(image).repeat(cfg.num, 1, 1, 1)
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    images = (
        model.sample(
            to(ids),
            to(mask),
            to(negative),
            to(negative_mask),
            guidance=cfg.guidance,
            steps=cfg.steps,
            eta=cfg.eta,
            init_latents=init_latents,
            strength=cfg.strength if cfg.init_image else 1.0,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        .cpu()
        .numpy()
    )
    out = Path(cfg.out) if cfg.out else path.parent / "samples_inference.png"
    save_image_grid(out, images, nrow=min(cfg.num, 8))
    print(f'{cfg.num} images for "{cfg.prompt}" -> {out}')
    return images


if __name__ == "__main__":
    cli_main(main, InferenceConfig)
