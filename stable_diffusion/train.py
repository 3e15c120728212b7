"""Train a small Stable Diffusion from scratch, in two stages:

1. the autoencoder (image <-> latent), on reconstruction + a small KL;
2. the text encoder and the U-Net together, on the diffusion loss over frozen latents,
   dropping 10% of captions so the same network also learns the unconditional model.

Then prompt it: for every digit and corner, generate with DDIM and classifier-free guidance,
and check with a digit classifier (shared.metrics) that the right digit is in the right corner.

    python train.py
    python train.py --dataset mnist --data-dir DIR
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from data import CaptionedDigits, Tokenizer, canonical_prompt, crop_corner, ink_corner
from model import SDConfig, StableDiffusion

from shared.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from shared.cli import RunConfig, arg, cli_main
from shared.logging import progress, start_run
from shared.metrics import get_judge
from shared.plots import plot_curves, save_image_grid
from shared.runtime import get_device, seed_everything, set_threads

PROJECT = Path(__file__).parent
GUIDANCE_SCALES = (1.0, 2.0, 4.0)  # evaluated at the end, beside the default


@dataclass
class TrainConfig(RunConfig):
    dataset: str = arg("digits", "digits to caption", choices=("digits", "mnist"))
    ae_steps: int = arg(400, "autoencoder training steps", min=1)
    unet_steps: int = arg(1800, "text encoder + U-Net training steps", min=1)
    batch_size: int = arg(64, "images per step", min=1)
    ae_lr: float = arg(1e-3, "autoencoder learning rate (Adam)", min=0, min_inclusive=False)
    lr: float = arg(2e-3, "U-Net and text encoder peak learning rate", min=0, min_inclusive=False)
    kl_weight: float = arg(1e-3, "weight of the autoencoder's KL term", min=0)
    caption_dropout: float = arg(
        0.1, "share of captions replaced by the empty prompt", min=0, max=1
    )
    guidance: float = arg(3.0, "classifier-free guidance scale for the evaluation", min=0)
    sample_steps: int = arg(30, "DDIM steps when sampling", min=1)
    samples_per_prompt: int = arg(4, "samples per (digit, corner) in the evaluation", min=1)
    ae_channels: int = arg(16, "autoencoder width", min=8)
    unet_channels: int = arg(32, "U-Net width", min=8)
    threads: int = arg(1, "torch CPU threads (0: torch's default, one per core)", min=0)


def evaluate(model, tokenizer, judge, cfg, guidance, device, generator):
    """Prompt with every (digit, corner); digit accuracy by the judge on the asked corner,
    corner accuracy by where the ink is. Returns both and the images."""
    pairs = [(d, c) for d in range(10) for c in range(4)] * cfg.samples_per_prompt
    ids, mask = tokenizer.encode_batch([canonical_prompt(d, c) for d, c in pairs])
    empty_ids, empty_mask = tokenizer.encode_batch([""] * len(pairs))
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    images = (
        model.sample(
            to(ids),
            to(mask),
            to(empty_ids),
            to(empty_mask),
            guidance=guidance,
            steps=cfg.sample_steps,
            generator=generator,
        )
        .cpu()
        .numpy()
    )
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
        cfg.ae_steps, cfg.unet_steps, cfg.batch_size = 2, 2, 8
        cfg.samples_per_prompt, cfg.sample_steps = 1, 2
        cfg.ae_channels, cfg.unet_channels = 8, 8
    run = start_run("text-to-image latent diffusion (digits in corners)", cfg, PROJECT)
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    device = get_device(cfg.device)
    rng = np.random.default_rng(cfg.seed)

    tokenizer = Tokenizer()
    train = CaptionedDigits("train", dataset=cfg.dataset, data_dir=cfg.data_dir)
    model_cfg = SDConfig(
        vocab_size=len(tokenizer),
        max_tokens=tokenizer.max_tokens,
        ae_channels=cfg.ae_channels,
        unet_channels=cfg.unet_channels,
    )
    model = StableDiffusion(model_cfg).to(device)
    checkpoint_path = run.path / "model.pt"
    ae_optimizer = torch.optim.Adam(model.autoencoder.parameters(), lr=cfg.ae_lr)
    diffusion_params = [*model.unet.parameters(), *model.text_encoder.parameters()]
    optimizer = torch.optim.AdamW(diffusion_params, lr=cfg.lr, weight_decay=0.01)
    history = {"ae_step": [], "ae_loss": [], "step": [], "loss": []}
    ae_done, first_step = 0, 0

    def save(stage_steps_done: tuple[int, int]):
        save_checkpoint(
            checkpoint_path,
            {
                "model": model.state_dict(),
                "config": asdict(model_cfg),
                "vocab": tokenizer.vocab,
                "ae_optimizer": ae_optimizer.state_dict(),
                "optimizer": optimizer.state_dict(),
                "progress": list(stage_steps_done),
                "history": history,
            },
        )

    if cfg.resume:
        state = load_checkpoint(checkpoint_path, required=("model", "progress", "optimizer"))
        load_model_state(model, state["model"], checkpoint_path)
        ae_optimizer.load_state_dict(state["ae_optimizer"])
        optimizer.load_state_dict(state["optimizer"])
        (ae_done, first_step), history = state["progress"], state["history"]

    def batch(n):
        images, captions, _, _ = train.sample(n, rng)
        return torch.from_numpy(images).to(device), captions

    # Stage 1: the autoencoder.
    model.autoencoder.train()
    for step in progress(range(ae_done, cfg.ae_steps), desc="autoencoder"):
        images, _ = batch(cfg.batch_size)
        loss, reconstruction, kl = model.autoencoder.loss(images, cfg.kl_weight)
        ae_optimizer.zero_grad()
        loss.backward()
        ae_optimizer.step()
        history["ae_step"].append(step)
        history["ae_loss"].append(reconstruction.item())
        if step % 100 == 0:
            run.log(
                stage="autoencoder", step=step, reconstruction=reconstruction.item(), kl=kl.item()
            )
    model.autoencoder.eval()
    for p in model.autoencoder.parameters():
        p.requires_grad_(False)
    with torch.no_grad():  # unit-variance latents: scale = 1 / std of the encoder's means
        sample_images, _ = batch(512)
        model.latent_scale.fill_(1.0 / model.autoencoder.encode(sample_images)[0].std().item())
    if first_step == 0:
        save((cfg.ae_steps, 0))

    # Stage 2: text encoder + U-Net on the diffusion loss.
    model.unet.train()
    model.text_encoder.train()
    warmup = max(1, cfg.unet_steps // 20)
    for step in progress(range(first_step, cfg.unet_steps), desc="diffusion"):
        lr_scale = (
            min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.unet_steps))
        )
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_scale
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
        history["step"].append(step)
        history["loss"].append(loss.item())
        if step % 100 == 0:
            run.log(stage="diffusion", step=step, loss=loss.item())
        if (step + 1) % 500 == 0:
            save((cfg.ae_steps, step + 1))
    save((cfg.ae_steps, cfg.unet_steps))

    # Evaluation and figures.
    model.eval()
    judge = get_judge(cfg.dataset, cfg.data_dir, device)
    generator = torch.Generator().manual_seed(cfg.seed)
    test = CaptionedDigits("test", dataset=cfg.dataset, data_dir=cfg.data_dir)
    test_images, _, _, _ = test.sample(8, np.random.default_rng(cfg.seed))
    with torch.no_grad():
        reconstructed = model.to_image(model.to_latent(torch.from_numpy(test_images).to(device)))
    save_image_grid(
        run.path / "reconstructions.png",
        np.concatenate([test_images, reconstructed.cpu().numpy()]),
        nrow=8,
    )
    plot_curves(
        run.path / "autoencoder_loss.png",
        {"reconstruction": (history["ae_step"], history["ae_loss"])},
        ylabel="BCE per image",
        logy=True,
    )
    plot_curves(
        run.path / "diffusion_loss.png",
        {"train": (history["step"], history["loss"])},
        ylabel="noise MSE",
        logy=True,
    )
    by_guidance = {}
    for guidance in sorted({cfg.guidance, *GUIDANCE_SCALES}):
        result = evaluate(model, tokenizer, judge, cfg, guidance, device, generator)
        by_guidance[guidance] = result
        run.log(
            stage="evaluation",
            guidance=guidance,
            prompt_accuracy=result["prompt_accuracy"],
            attribute_accuracy=result["attribute_accuracy"],
        )
    default = by_guidance[cfg.guidance]
    # one row per digit, one column per corner, from the canonical prompts
    save_image_grid(run.path / "samples.png", default["images"][:40], nrow=4)
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
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
