"""Train a denoising diffusion model (DDPM) with a hand-built U-Net, then judge its samples.

Default: class-conditional DDPM on scikit-learn's 8x8 digits, a few minutes on a laptop CPU.
The samples are scored by the shared digit classifier (how confidently it recognises them,
its accuracy on the asked-for classes) and by the Frechet distance in its features, beside the
floor that real test images reach.

    python train.py                                  # digits, default settings
    python train.py --preset mnist --data-dir DATA   # MNIST at 28x28 (DATA holds MNIST/raw)
    python train.py --dataset folder --folder ~/pictures --no-conditional --channels 3
    torchrun --standalone --nproc_per_node 2 train.py   # the same run, the batch split in two
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import report
import torch
from data import load_training_images
from model import EMA, UNet, UNetConfig, training_bytes

from diffusion import PREDICTIONS, SCHEDULES, VARIANCES, GaussianDiffusion, to_unit
from shared.cli import Preset, RunConfig, arg, cli_main
from shared.data import IMAGE_DATASETS
from shared.errors import UserError
from shared.logging import progress, read_log, start_run
from shared.metrics import JUDGE_SIZES, get_judge
from shared.runtime import (
    PRECISION_HELP,
    PRECISIONS,
    check_fits_in_memory,
    init_distributed,
    mixed_precision,
    seed_everything,
    set_threads,
)
from shared.state import TrainingState, load_for_resume

PROJECT_DIR = Path(__file__).parent
CHECKPOINT = "model.pt"
# What decides the data, the network, the process and the optimisation: a resumed run must
# keep them, or it would not be the run it continues.
MUST_MATCH = (
    "dataset", "folder", "channels", "image_size", "base_channels", "channel_mults",
    "num_res_blocks", "attention_resolutions", "num_heads", "num_groups", "dropout",
    "conditional", "p_uncond", "timesteps", "schedule", "prediction", "steps", "batch_size",
    "lr", "warmup", "ema_decay",
)  # fmt: skip
EVAL_BATCH = 400  # evaluation samples drawn at once: bounds the memory 1,000 samples need

# MNIST and Fashion-MNIST at their native 28x28: three levels (28, 14, 7) of 32, 64, 64
# channels with attention at 7x7, 3600 steps of 64 (under 4 epochs), DDIM with 50 steps and
# guidance 2 to judge. Both cores: at this width a second thread nearly halves a step.
_REAL_DATA = dict(
    image_size=28, base_channels=32, channel_mults=(1, 2, 2), attention_resolutions=(7,),
    steps=3600, batch_size=64, lr=1e-3, warmup=200, ema_decay=0.999, log_every=50,
    checkpoint_every=400, sample_steps=50, guidance=2.0, eval_samples=1000, threads=2,
)  # fmt: skip
_REPORT = ("accuracy", "frechet", "frechet_floor")


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "mnist": Preset(
            "class-conditional DDPM on MNIST at 28x28, judged on 1,000 guided DDIM samples",
            dict(dataset="mnist", **_REAL_DATA),
            anchor="DDPM (Ho et al. 2020) schedule and objective, classifier-free guidance "
            "(Ho & Salimans 2022); Frechet against its real-vs-real floor",
            report=_REPORT,
        ),
        "fashion-mnist": Preset(
            "class-conditional DDPM on Fashion-MNIST at 28x28, the MNIST recipe",
            dict(dataset="fashion-mnist", **_REAL_DATA),
            anchor="the same recipe as mnist; Frechet against its real-vs-real floor",
            report=_REPORT,
        ),
    }

    dataset: str = arg(
        "digits", "training images", choices=("digits", "mnist", "fashion-mnist", "folder")
    )
    folder: str = arg("", "image folder for --dataset folder")
    channels: int = arg(1, "channels of --dataset folder images (1 grey, 3 colour)", choices=(1, 3))
    image_size: int = arg(16, "side length the images are resized to (digits are 8x8)", min=4)
    # The U-Net (model.py)
    base_channels: int = arg(16, "U-Net channels at full resolution", min=1)
    channel_mults: tuple[int, ...] = arg(
        (1, 2, 2), "channel multiplier per resolution level", min=1
    )
    num_res_blocks: int = arg(1, "residual blocks per level", min=1)
    attention_resolutions: tuple[int, ...] = arg((4,), "side lengths with self-attention", min=1)
    num_heads: int = arg(4, "attention heads", min=1)
    num_groups: int = arg(8, "GroupNorm groups", min=1)
    dropout: float = arg(0.0, "dropout in the residual blocks", min=0, max=1)
    conditional: bool = arg(True, "learn class-conditional generation")
    p_uncond: float = arg(0.1, "probability a label is dropped in training (for guidance)", min=0)
    # The diffusion (diffusion.py)
    timesteps: int = arg(1000, "T, the number of noising steps", min=2)
    schedule: str = arg("linear", "beta schedule", choices=SCHEDULES)
    prediction: str = arg(
        "eps", "what the network predicts: noise or velocity", choices=PREDICTIONS
    )
    # Optimisation
    steps: int = arg(1000, "training steps", min=1)
    batch_size: int = arg(
        64, "images per step: the global batch, split over torchrun processes", min=1
    )
    lr: float = arg(
        2e-3,
        "peak learning rate for the global batch (AdamW, warm-up then cosine decay)",
        min=0,
        min_inclusive=False,
    )
    warmup: int = arg(50, "learning-rate warm-up steps", min=0)
    ema_decay: float = arg(0.99, "decay of the weights' moving average", min=0, max=1)
    log_every: int = arg(50, "steps between log lines", min=1)
    checkpoint_every: int = arg(200, "steps between checkpoints (for --resume)", min=1)
    # One thread: these small tensors gain little from a second one, and on a busy machine
    # OpenMP threads that wait for each other make a step ten times slower.
    threads: int = arg(1, "torch CPU threads (0: torch's default)", min=0)
    precision: str = arg("auto", PRECISION_HELP, choices=PRECISIONS)
    # Sampling for the evaluation and the figures
    sampler: str = arg("ddim", "sampler for evaluation and figures", choices=("ddpm", "ddim"))
    sample_steps: int = arg(25, "DDIM steps (ddpm always takes all T)", min=1)
    eta: float = arg(0.0, "DDIM noise: 0 deterministic, 1 DDPM-like", min=0, max=1)
    variance: str = arg("fixed_small", "DDPM reverse variance", choices=VARIANCES)
    guidance: float = arg(1.0, "classifier-free guidance weight w for the class samples", min=0)
    eval_samples: int = arg(
        400, "samples scored by the digit classifier (at least one per class)", min=10
    )

    def check(self):
        if self.dataset == "folder" and not self.folder:
            raise UserError("--dataset folder needs --folder DIR")
        if self.dataset == "folder" and self.conditional:
            raise UserError("a folder has no labels: add --no-conditional")
        if self.dataset != "folder" and self.channels != 1:
            raise UserError(f"{self.dataset} is grey: --channels 3 applies to --dataset folder")
        if self.image_size % 2 ** (len(self.channel_mults) - 1):
            raise UserError(
                f"--image-size {self.image_size} must halve {len(self.channel_mults) - 1} times"
            )
        if self.schedule == "linear" and self.timesteps < 25:
            raise UserError("the linear schedule needs --timesteps >= 25 (beta_T = 20 / T)")
        if self.sample_steps > self.timesteps:
            raise UserError(f"--sample-steps {self.sample_steps} > --timesteps {self.timesteps}")
        widths = [self.base_channels * m for m in self.channel_mults]
        if any(w % self.num_groups for w in widths):
            raise UserError(f"--num-groups {self.num_groups} must divide every width {widths}")
        if any(w % self.num_heads for w in widths):
            raise UserError(f"--num-heads {self.num_heads} must divide every width {widths}")


def unet_config(cfg: TrainConfig, n_classes: int) -> UNetConfig:
    return UNetConfig(
        image_size=cfg.image_size,
        in_channels=cfg.channels,
        base_channels=cfg.base_channels,
        channel_mults=tuple(cfg.channel_mults),
        num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=tuple(cfg.attention_resolutions),
        num_heads=cfg.num_heads,
        num_groups=cfg.num_groups,
        dropout=cfg.dropout,
        num_classes=n_classes if cfg.conditional else 0,
    )


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """A tiny model and a few steps of every stage: checkpoints at steps 2 and 4."""
    return dataclasses.replace(
        cfg,
        base_channels=8,
        channel_mults=(1, 2),
        num_groups=4,
        num_heads=2,
        timesteps=50,
        steps=4,
        batch_size=16,
        warmup=1,
        log_every=1,
        checkpoint_every=2,
        sample_steps=4,
        eval_samples=20,
    )


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress_ = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_)))


def training_batch(generator, x_train, y_train, cfg: TrainConfig, dist):
    """This process's share of the step's global batch: (x_0, labels or None, t, eps).

    Every process draws the whole batch (indices, dropped labels, t, eps) from the same
    generator, in the order one process draws it, and keeps its slice: N processes together
    see exactly the examples and the noise of one process with the same --batch-size.
    """
    device, B = x_train.device, cfg.batch_size
    index = torch.randint(0, len(x_train), (B,), device=device, generator=generator)
    y = None
    if y_train is not None:
        drop = torch.rand(B, device=device, generator=generator) < cfg.p_uncond
        y = dist.shard(torch.where(drop, -1, y_train[index]))  # -1: "no class", for guidance
    t = torch.randint(0, cfg.timesteps, (B,), device=device, generator=generator)
    noise = torch.randn((B, *x_train.shape[1:]), device=device, generator=generator)
    return x_train[dist.shard(index)], y, dist.shard(t), dist.shard(noise)


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    dist = init_distributed(cfg.device)
    device = dist.device
    local_batch = len(dist.shard(range(cfg.batch_size)))  # a UserError if it does not split
    amp = mixed_precision(cfg.precision, device)
    ckpt = load_for_resume(cfg, PROJECT_DIR, CHECKPOINT, must_match=MUST_MATCH)
    seed_everything(cfg.seed + dist.rank)  # dropout masks differ between processes
    set_threads(cfg.threads)
    n_classes = len(IMAGE_DATASETS[cfg.dataset].classes) if cfg.conditional else 0
    ucfg = unet_config(cfg, n_classes)
    sizes = (
        f"--base-channels {cfg.base_channels} --image-size {cfg.image_size} "
        f"--batch-size {cfg.batch_size}"
    )
    check_fits_in_memory(training_bytes(ucfg, local_batch), sizes, device)

    # Data, in [-1, 1]: images (N, C, H, W) and labels (N,), None for a folder.
    x_np, y_np, _ = load_training_images(
        cfg.dataset, cfg.image_size, cfg.data_dir, cfg.folder, cfg.channels
    )
    x_train = torch.from_numpy(x_np).to(device)
    y_train = torch.from_numpy(y_np).to(device) if n_classes else None
    run = start_run(f"diffusion on {cfg.dataset}", cfg, PROJECT_DIR, is_main=dist.is_main)

    # Model (DDP hands every process rank 0's initial weights), its moving average (of those
    # identical weights, so identical on every process), the diffusion, the optimiser.
    raw_model = UNet(ucfg).to(device)
    model = dist.wrap(raw_model)
    ema = EMA(raw_model, cfg.ema_decay)
    diffusion = GaussianDiffusion(cfg.timesteps, cfg.schedule, cfg.prediction, device)
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=cfg.lr, weight_decay=0.0)
    if dist.is_main:
        n_params = sum(p.numel() for p in raw_model.parameters())
        processes = f"{dist.world_size} processes" if dist.enabled else "1 process"
        print(f"U-Net with {n_params:,} parameters; {len(x_train)} training images; "
              f"device {device}, {processes}, precision {amp.name}")  # fmt: skip
    generator = torch.Generator(device).manual_seed(cfg.seed)  # batches, dropped labels, t, eps
    scaler = {"scaler": amp.scaler} if amp.scaler else {}  # fp16 only
    state = TrainingState(run.path / CHECKPOINT, cfg, dist=dist, model=raw_model, ema=ema,
                          optimizer=optimizer, noise=generator, **scaler)  # fmt: skip
    start = state.restore(ckpt)
    running = list(state.extra.get("running", []))  # losses since the last log line

    # Training: L_simple on random batches, labels dropped with probability p_uncond.
    model.train()
    for step in progress(range(start, cfg.steps), desc="train", disable=not dist.is_main):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        x0, y, t, noise = training_batch(generator, x_train, y_train, cfg, dist)
        with amp.autocast():
            loss = diffusion.loss(model, x0, y, t=t, noise=noise)  # the mean over this share
        optimizer.zero_grad(set_to_none=True)
        amp.backward(loss)  # DDP averages the gradients: those of the global batch's mean
        amp.step(optimizer)
        ema.update(raw_model, step)  # d warms up over the first steps
        running.append(dist.all_reduce_mean(loss.item()))  # the global batch's loss
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            run.log(step=step + 1, loss=float(np.mean(running)), lr=learning_rate(step, cfg))
            running = []
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            state.save(step + 1, unet=dataclasses.asdict(ucfg), running=running)  # every rank

    # Evaluation with the averaged weights, on rank 0 alone: it needs no other process.
    dist.close()
    if not dist.is_main:
        return {}
    raw_model.load_state_dict(ema.state_dict())
    raw_model.eval()
    report.write_figures(run.path, cfg, diffusion, raw_model, x_train, n_classes, device)
    return evaluate(run, cfg, diffusion, raw_model, n_classes, device)


def draw_samples(cfg: TrainConfig, diffusion, model, n_classes: int, device):
    """cfg.eval_samples images in [0, 1], class-balanced when conditional: (images, labels)."""
    generator = torch.Generator(device).manual_seed(cfg.seed + 2)
    labels = torch.arange(cfg.eval_samples, device=device) % n_classes if n_classes else None
    images = []
    for first in range(0, cfg.eval_samples, EVAL_BATCH):
        n = min(EVAL_BATCH, cfg.eval_samples - first)
        x, _ = diffusion.sample(
            model, (n, cfg.channels, cfg.image_size, cfg.image_size), cfg.sampler,
            cfg.sample_steps, cfg.eta, y=None if labels is None else labels[first : first + n],
            guidance=cfg.guidance, variance=cfg.variance, generator=generator, device=device,
        )  # fmt: skip
        images.append(to_unit(x))
    return np.concatenate(images), None if labels is None else labels.cpu().numpy()


def evaluate(run, cfg: TrainConfig, diffusion, model, n_classes: int, device) -> dict:
    """The judge's scores of class-balanced samples, the class grid, and metrics.json."""
    final_loss = [r for r in read_log(run.path) if "loss" in r][-1]["loss"]
    n_steps = cfg.timesteps if cfg.sampler == "ddpm" else cfg.sample_steps
    extra = dict(sampler=cfg.sampler, sample_steps=n_steps, final_loss=final_loss)
    if cfg.dataset not in JUDGE_SIZES:  # a folder: no classifier to judge it with
        return run.finish(metric="train_loss", value=final_loss, higher_is_better=False, **extra)
    judge = get_judge(cfg.dataset, data_dir=cfg.data_dir or None, device=device)
    samples, labels = draw_samples(cfg, diffusion, model, n_classes, device)
    scores = judge.evaluate(samples, labels)
    if labels is not None:
        classes = IMAGE_DATASETS[cfg.dataset].classes
        report.write_class_samples(run.path, samples, labels, classes)
    extra.update(
        frechet=scores["frechet"],
        frechet_floor=scores["frechet_floor"],
        classes_covered=scores["classes_covered"],
        accuracy=scores.get("accuracy"),
        guidance=cfg.guidance if labels is not None else None,
        eval_samples=cfg.eval_samples,
        judge_test_accuracy=judge.test_accuracy,
    )
    return run.finish(
        metric="confidence", value=scores["confidence"], higher_is_better=True, **extra
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
