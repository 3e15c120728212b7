"""Train a small Stable Diffusion from scratch, in two stages:

1. the autoencoder (image <-> latent), on reconstruction + a small KL;
2. the text encoder and the U-Net together, on the diffusion loss over frozen latents,
   dropping 10% of captions so the same network also learns the unconditional model.

Then prompt it: for every digit and corner, generate with DDIM and classifier-free guidance,
and check with a digit classifier (shared.metrics) that the right digit is in the right corner.

    python train.py
    python train.py --preset mnist --data-dir DATA     # real MNIST digits, 28x28 each
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import report
import torch
from data import CaptionedDigits, Tokenizer, canonical_prompt, crop_corner, ink_corner
from model import SDConfig, StableDiffusion

from shared.cli import Preset, RunConfig, arg, cli_main
from shared.logging import progress, start_run
from shared.metrics import get_judge
from shared.runtime import (
    check_fits_in_memory,
    count_parameters,
    get_device,
    seed_everything,
    set_threads,
)
from shared.state import TrainingState, load_for_resume

PROJECT = Path(__file__).parent
CHECKPOINT = "model.pt"
GUIDANCE_SCALES = (1.0, 2.0, 3.0, 4.0)  # evaluated at the end, beside --guidance
# They decide the data and the networks: a resumed run must use the same.
MUST_MATCH = (
    "dataset",
    "canvas",
    "ae_steps",
    "unet_steps",
    "batch_size",
    "ae_channels",
    "unet_channels",
)


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "mnist": Preset(
            "real MNIST digits (28x28 each) in the corners of a 56x56 canvas, captioned",
            dict(
                dataset="mnist",
                canvas=56,
                ae_steps=600,
                unet_steps=3600,
                unet_channels=48,
                batch_size=64,
                threads=2,  # wide enough that both cores help
            ),
            anchor="the default run on 8x8 digits: prompt accuracy 0.956, corner accuracy 1.000",
            report=("attribute_accuracy", "guidance", "judge_accuracy"),
        )
    }
    dataset: str = arg("digits", "digits to caption", choices=("digits", "mnist"))
    canvas: int = arg(24, "canvas side in pixels; each digit fills a quarter (a multiple of 8)")
    ae_steps: int = arg(400, "autoencoder training steps", min=1)
    unet_steps: int = arg(1800, "text encoder + U-Net training steps", min=1)
    batch_size: int = arg(64, "images per step", min=1)
    ae_lr: float = arg(1e-3, "autoencoder learning rate (Adam)", min=0, min_inclusive=False)
    lr: float = arg(2e-3, "U-Net and text encoder peak learning rate", min=0, min_inclusive=False)
    kl_weight: float = arg(1e-3, "weight of the autoencoder's KL term", min=0)
    caption_dropout: float = arg(
        0.1, "share of captions replaced by the empty prompt", min=0, max=1
    )
    guidance: float = arg(3.0, "classifier-free guidance scale for the headline number", min=0)
    sample_steps: int = arg(30, "DDIM steps when sampling", min=1)
    samples_per_prompt: int = arg(4, "samples per (digit, corner) in the evaluation", min=1)
    ae_channels: int = arg(16, "autoencoder width", min=8)
    unet_channels: int = arg(32, "U-Net width (a multiple of 8: GroupNorm's groups)", min=8)
    checkpoint_every: int = arg(500, "steps (of both stages together) between checkpoints", min=1)
    threads: int = arg(1, "torch CPU threads (0: torch's default, one per core)", min=0)

    def check(self):
        from shared.errors import UserError

        if self.canvas % 8 or self.canvas < 16:
            raise UserError(f"--canvas must be a multiple of 8 and >= 16, got {self.canvas}")
        if self.unet_channels % 8:
            raise UserError(f"--unet-channels must be a multiple of 8, got {self.unet_channels}")


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """A tiny model and a few steps of each stage, with a checkpoint every two steps."""
    return dataclasses.replace(
        cfg,
        ae_steps=2,
        unet_steps=4,
        batch_size=8,
        samples_per_prompt=1,
        sample_steps=2,
        ae_channels=8,
        unet_channels=8,
        checkpoint_every=2,
    )


def check_memory(model_cfg: SDConfig, cfg: TrainConfig, device) -> None:
    """Weights, gradients and Adam's two moments, plus a generous bound on one batch's
    activations (about 40 feature maps of the U-Net and 8 of the autoencoder per image)."""
    n_params = count_parameters(lambda: StableDiffusion(model_cfg))
    latent_area = (cfg.canvas // 4) ** 2
    activations = (
        cfg.batch_size
        * 4
        * (40 * 2 * cfg.unet_channels * latent_area + 8 * cfg.ae_channels * cfg.canvas**2)
    )
    flags = f"--unet-channels {cfg.unet_channels} --ae-channels {cfg.ae_channels} --canvas "
    flags += f"{cfg.canvas} --batch-size {cfg.batch_size}"
    check_fits_in_memory(16 * n_params + activations, flags, device)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over the first 5% of the diffusion stage, then cosine decay to 0."""
    warmup = max(1, cfg.unet_steps // 20)
    return (
        cfg.lr
        * min(1.0, (step + 1) / warmup)
        * 0.5
        * (1 + math.cos(math.pi * step / cfg.unet_steps))
    )


@torch.no_grad()
def set_latent_scale(model: StableDiffusion, images: torch.Tensor) -> None:
    """Unit-variance latents, the scale the noise schedule assumes: 1 / std of the means."""
    model.latent_scale.fill_(1.0 / model.autoencoder.encode(images)[0].std().item())


def evaluate(model, tokenizer, judge, cfg, guidance, device):
    """Prompt with every (digit, corner); digit accuracy by the judge on the asked corner,
    corner accuracy by where the ink is. Returns both and the images, in prompt order."""
    pairs = [(d, c) for d in range(10) for c in range(4)] * cfg.samples_per_prompt
    ids, mask = tokenizer.encode_batch([canonical_prompt(d, c) for d, c in pairs])
    empty_ids, empty_mask = tokenizer.encode_batch([""] * len(pairs))
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    images = model.sample(
        to(ids),
        to(mask),
        to(empty_ids),
        to(empty_mask),
        guidance=guidance,
        steps=cfg.sample_steps,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    images = images.cpu().numpy()
    digits = np.array([d for d, _ in pairs])
    corners = np.array([c for _, c in pairs])
    predicted = judge.probs(crop_corner(images, corners)).argmax(1)
    return {
        "prompt_accuracy": float((predicted == digits).mean()),
        "attribute_accuracy": float((ink_corner(images) == corners).mean()),
        "images": images,
    }


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    ckpt = load_for_resume(cfg, PROJECT, CHECKPOINT, must_match=MUST_MATCH)
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    device = get_device(cfg.device)
    rng = np.random.default_rng(cfg.seed)  # which digits, corners, wordings and dropped captions

    tokenizer = Tokenizer()
    model_cfg = SDConfig(
        image_size=cfg.canvas,
        vocab_size=len(tokenizer),
        max_tokens=tokenizer.max_tokens,
        ae_channels=cfg.ae_channels,
        unet_channels=cfg.unet_channels,
    )
    check_memory(model_cfg, cfg, device)
    train = CaptionedDigits("train", cfg.canvas, cfg.dataset, cfg.data_dir)
    run = start_run("text-to-image latent diffusion (digits in corners)", cfg, PROJECT)
    model = StableDiffusion(model_cfg).to(device)
    ae_optimizer = torch.optim.Adam(model.autoencoder.parameters(), lr=cfg.ae_lr)
    diffusion_params = [*model.unet.parameters(), *model.text_encoder.parameters()]
    optimizer = torch.optim.AdamW(diffusion_params, lr=cfg.lr, weight_decay=0.01)
    parts = dict(model=model, ae_optimizer=ae_optimizer, optimizer=optimizer, data_rng=rng)
    state = TrainingState(run.path / CHECKPOINT, cfg, **parts)
    start = state.restore(ckpt)
    total = cfg.ae_steps + cfg.unet_steps

    def save(step: int) -> None:  # what inference.py needs beside the training state
        state.save(step, config=asdict(model_cfg), vocab=tokenizer.vocab)

    def batch(n):
        images, captions, _, _ = train.sample(n, rng)
        return torch.from_numpy(images).to(device), captions

    # Stage 1: the autoencoder, on reconstruction + kl_weight * KL.
    model.autoencoder.train()
    for step in progress(range(start, cfg.ae_steps), desc="autoencoder"):
        images, _ = batch(cfg.batch_size)
        loss, reconstruction, kl = model.autoencoder.loss(images, cfg.kl_weight)
        ae_optimizer.zero_grad()
        loss.backward()
        ae_optimizer.step()
        run.log(step=step + 1, stage="autoencoder", reconstruction=reconstruction, kl=kl)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.ae_steps:
            save(step + 1)
    model.autoencoder.eval().requires_grad_(False)  # frozen from here on
    if start < cfg.ae_steps:  # a run resumed later keeps the scale its checkpoint holds
        set_latent_scale(model, batch(512)[0])
        save(cfg.ae_steps)

    # Stage 2: text encoder + U-Net on E || eps - eps_theta(z_t, t, text) ||^2.
    model.unet.train()
    model.text_encoder.train()
    for step in progress(range(max(start, cfg.ae_steps), total), desc="diffusion"):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - cfg.ae_steps, cfg)
        images, captions = batch(cfg.batch_size)
        dropped = rng.random(len(captions)) < cfg.caption_dropout  # learn p(z) beside p(z | text)
        captions = ["" if drop else text for drop, text in zip(dropped, captions)]
        ids, mask = (torch.from_numpy(a).to(device) for a in tokenizer.encode_batch(captions))
        with torch.no_grad():
            z0 = model.to_latent(images)
        loss = model.diffusion_loss(z0, ids, mask)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion_params, 1.0)
        optimizer.step()
        run.log(step=step + 1, stage="diffusion", loss=loss)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
            save(step + 1)

    return finish(run, model, tokenizer, cfg, device)


def finish(run, model, tokenizer, cfg: TrainConfig, device) -> dict:
    """Prompt accuracy at several guidance scales, the figures, and metrics.json."""
    model.eval()
    judge = get_judge(cfg.dataset, cfg.data_dir, device)
    by_guidance = {}
    for guidance in sorted({cfg.guidance, *GUIDANCE_SCALES}):
        result = evaluate(model, tokenizer, judge, cfg, guidance, device)
        by_guidance[guidance] = result
        print(
            f"guidance {guidance:g}: prompt accuracy {result['prompt_accuracy']:.3f}, "
            f"corner accuracy {result['attribute_accuracy']:.3f}"
        )
    test = CaptionedDigits("test", cfg.canvas, cfg.dataset, cfg.data_dir)
    report.write_figures(run.path, model, test, by_guidance[cfg.guidance]["images"], cfg.seed)
    default = by_guidance[cfg.guidance]
    return run.finish(
        metric="prompt_accuracy",
        value=default["prompt_accuracy"],
        higher_is_better=True,
        attribute_accuracy=default["attribute_accuracy"],
        guidance=cfg.guidance,
        by_guidance={
            str(g): {k: r[k] for k in ("prompt_accuracy", "attribute_accuracy")}
            for g, r in by_guidance.items()
        },
        latent_scale=model.latent_scale.item(),
        judge_accuracy=judge.test_accuracy,
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
