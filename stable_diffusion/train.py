"""Train a small Stable Diffusion from scratch, in two stages:

1. the autoencoder (image <-> latent), on reconstruction + a small KL;
2. the text encoder and the U-Net together, on the diffusion loss over frozen latents,
   dropping 10% of captions so the same network also learns the unconditional model.

Then prompt it: for every digit and corner, generate with DDIM and classifier-free guidance,
and check with a digit classifier (shared.metrics) that the right digit is in the right corner.

    python train.py
    python train.py --preset mnist --data-dir DATA     # real MNIST digits, 28x28 each
    torchrun --standalone --nproc_per_node 2 train.py  # the same run, split over 2 processes
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
            anchor="the default run on 8x8 digits: prompt accuracy 0.969, corner accuracy 1.000",
            report=("attribute_accuracy", "guidance", "judge_accuracy"),
        )
    }
    dataset: str = arg("digits", "digits to caption", choices=("digits", "mnist"))
    canvas: int = arg(24, "canvas side in pixels; each digit fills a quarter (a multiple of 8)")
    ae_steps: int = arg(400, "autoencoder training steps", min=1)
    unet_steps: int = arg(1800, "text encoder + U-Net training steps", min=1)
    batch_size: int = arg(
        64, "images per step: the global batch, split over torchrun processes", min=1
    )
    ae_lr: float = arg(
        1e-3, "autoencoder learning rate (Adam), for the global batch", min=0, min_inclusive=False
    )
    lr: float = arg(
        2e-3,
        "U-Net and text encoder peak learning rate, for the global batch",
        min=0,
        min_inclusive=False,
    )
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
    precision: str = arg("auto", PRECISION_HELP, choices=PRECISIONS)
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


class Batches:
    """Training batches for torchrun: every process draws the same global batch of --batch-size
    from the same generator and keeps its own contiguous share (all of it in one process)."""

    def __init__(self, data: CaptionedDigits, tokenizer: Tokenizer, rng, cfg: TrainConfig, dist):
        self.data, self.tokenizer, self.rng, self.cfg, self.dist = data, tokenizer, rng, cfg, dist

    def images(self) -> torch.Tensor:
        """This process's images, (B / N, 1, H, W) of a global B over N processes."""
        return self._draw()[0]

    def captioned_images(self):
        """Images and their captions as token ids and masks (B / N, T), cfg.caption_dropout of
        the captions replaced by the empty prompt: learn p(z) beside p(z | text)."""
        images, captions = self._draw()
        dropped = self.dist.shard(self.rng.random(self.cfg.batch_size) < self.cfg.caption_dropout)
        captions = ["" if drop else text for drop, text in zip(dropped, captions)]
        ids, mask = (self._to_device(a) for a in self.tokenizer.encode_batch(captions))
        return images, ids, mask

    def _draw(self):
        images, captions, _, _ = self.data.sample(
            self.cfg.batch_size, self.rng, keep=self.dist.shard
        )
        return self._to_device(images), captions

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.dist.device)

    def noise(self, *shape) -> torch.Tensor:
        """This process's share of N(0, I) noise (B, *shape), drawn for the global batch."""
        return self.dist.shard(torch.randn(self.cfg.batch_size, *shape)).to(self.dist.device)

    def time_steps(self, timesteps: int) -> torch.Tensor:
        """This process's share of t ~ U{0, ..., timesteps - 1} (B,), drawn for the global batch."""
        t = torch.randint(0, timesteps, (self.cfg.batch_size,))
        return self.dist.shard(t).to(self.dist.device)


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    dist = init_distributed(cfg.device)  # one process unless started by torchrun
    device = dist.device
    ckpt = load_for_resume(cfg, PROJECT, CHECKPOINT, must_match=MUST_MATCH)
    seed_everything(cfg.seed)  # alike in every process: each draws the global batch's noise
    set_threads(cfg.threads)
    amp = mixed_precision(cfg.precision, device)
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
    dist.shard(range(cfg.batch_size))  # a batch that does not split stops here, before any file
    train = CaptionedDigits("train", cfg.canvas, cfg.dataset, cfg.data_dir)
    task = "text-to-image latent diffusion (digits in corners)"
    run = start_run(task, cfg, PROJECT, is_main=dist.is_main)  # only rank 0 writes
    model = StableDiffusion(model_cfg).to(device)
    ae_optimizer = torch.optim.Adam(model.autoencoder.parameters(), lr=cfg.ae_lr)
    diffusion_params = [*model.unet.parameters(), *model.text_encoder.parameters()]
    optimizer = torch.optim.AdamW(diffusion_params, lr=cfg.lr, weight_decay=0.01)
    parts = dict(model=model, ae_optimizer=ae_optimizer, optimizer=optimizer, data_rng=rng)
    if amp.scaler is not None:  # fp16's loss scale
        parts["scaler"] = amp.scaler
    state = TrainingState(run.path / CHECKPOINT, cfg, dist=dist, **parts)
    start = state.restore(ckpt)  # in every process: the same parts, its own global generators
    batches = Batches(train, tokenizer, rng, cfg, dist)

    def save(step: int) -> None:  # in every process; what inference.py needs beside the state
        state.save(step, config=asdict(model_cfg), vocab=tokenizer.vocab)

    train_autoencoder(model, ae_optimizer, batches, save, start, cfg, dist, amp, run)
    model.autoencoder.eval().requires_grad_(False)  # frozen from here on
    if start < cfg.ae_steps:  # a run resumed later keeps the scale its checkpoint holds
        images = train.sample(512, rng)[0]  # the same 512 in every process
        set_latent_scale(model, torch.from_numpy(images).to(device))
        save(cfg.ae_steps)
    train_diffusion(model, optimizer, batches, save, start, cfg, dist, amp, run)

    metrics = finish(run, model, tokenizer, cfg, device) if dist.is_main else {}
    dist.close()
    return metrics


def train_autoencoder(model, optimizer, batches, save, start, cfg, dist, amp, run) -> None:
    """Stage 1: the autoencoder, on reconstruction + kl_weight * KL, averaged over processes."""
    autoencoder = dist.wrap(model.autoencoder)  # DistributedDataParallel under torchrun
    latent_shape = (model.cfg.latent_channels, cfg.canvas // 4, cfg.canvas // 4)
    model.autoencoder.train()
    steps = range(start, cfg.ae_steps)
    for step in progress(steps, desc="autoencoder", disable=not dist.is_main):
        images = batches.images()
        noise = batches.noise(*latent_shape)  # z = mu + sigma * noise
        with amp.autocast():
            loss, reconstruction, kl = autoencoder(images, cfg.kl_weight, noise)
        optimizer.zero_grad()
        amp.backward(loss)
        amp.step(optimizer)
        reconstruction, kl = (dist.all_reduce_mean(x.item()) for x in (reconstruction, kl))
        run.log(step=step + 1, stage="autoencoder", reconstruction=reconstruction, kl=kl)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.ae_steps:
            save(step + 1)


def train_diffusion(model, optimizer, batches, save, start, cfg, dist, amp, run) -> None:
    """Stage 2: text encoder + U-Net on E || eps - eps_theta(z_t, t, text) ||^2 over the frozen
    autoencoder's latents; DistributedDataParallel averages the gradients of the two."""
    denoiser = dist.wrap(model)  # its forward is the diffusion loss; frozen parameters stay out
    trained = [*model.unet.parameters(), *model.text_encoder.parameters()]
    model.unet.train()
    model.text_encoder.train()
    total = cfg.ae_steps + cfg.unet_steps
    steps = range(max(start, cfg.ae_steps), total)
    for step in progress(steps, desc="diffusion", disable=not dist.is_main):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - cfg.ae_steps, cfg)
        images, ids, mask = batches.captioned_images()
        with torch.no_grad():
            z0 = model.to_latent(images)
        t, noise = batches.time_steps(model.cfg.timesteps), batches.noise(*z0.shape[1:])
        with amp.autocast():
            loss = denoiser(z0, ids, mask, t, noise)
        optimizer.zero_grad()
        amp.backward(loss)
        amp.unscale(optimizer)  # clip the true gradient, not fp16's scaled one
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        amp.step(optimizer)
        run.log(step=step + 1, stage="diffusion", loss=dist.all_reduce_mean(loss.item()))
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
            save(step + 1)


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
