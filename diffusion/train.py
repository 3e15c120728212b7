"""Train a denoising diffusion model (DDPM) with a hand-built U-Net, then judge its samples.

Default: class-conditional DDPM on scikit-learn's 8x8 digits, a few minutes on a laptop CPU.
The samples are scored by the shared digit classifier (how confidently it recognises them,
its accuracy on the asked-for classes) and by the Frechet distance in its features, beside the
floor that real test images reach.

    python train.py                                  # digits, default settings
    python train.py --dataset mnist --image-size 28 --data-dir /work/shared/data --steps 4000
    python train.py --dataset folder --folder ~/pictures --no-conditional --channels 3
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from data import load_training_images
from model import EMA, UNet, UNetConfig

from diffusion import PREDICTIONS, SCHEDULES, VARIANCES, GaussianDiffusion
from shared.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from shared.cli import RunConfig, arg, cli_main
from shared.errors import UserError
from shared.logging import progress, start_run
from shared.metrics import JUDGE_SIZES, get_judge
from shared.plots import images_to_grid, plot_curves, save_gif, save_image, save_image_grid
from shared.runtime import get_device, seed_everything, set_threads

PROJECT_DIR = Path(__file__).parent
CHECKPOINT = "model.pt"


@dataclass
class TrainConfig(RunConfig):
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
    conditional: bool = arg(True, "learn class-conditional generation (on; --no-conditional)")
    p_uncond: float = arg(0.1, "probability a label is dropped in training (for guidance)", min=0)
    # The diffusion (diffusion.py)
    timesteps: int = arg(1000, "T, the number of noising steps", min=2)
    schedule: str = arg("linear", "beta schedule", choices=SCHEDULES)
    prediction: str = arg(
        "eps", "what the network predicts: noise or velocity", choices=PREDICTIONS
    )
    # Optimisation
    steps: int = arg(1000, "training steps", min=1)
    batch_size: int = arg(64, "images per step", min=1)
    lr: float = arg(
        2e-3, "peak learning rate (AdamW, warm-up then cosine decay)", min=0, min_inclusive=False
    )
    warmup: int = arg(50, "learning-rate warm-up steps", min=0)
    ema_decay: float = arg(0.99, "decay of the weights' moving average", min=0, max=1)
    log_every: int = arg(50, "steps between log lines", min=1)
    checkpoint_every: int = arg(200, "steps between checkpoints (for --resume)", min=1)
    # One thread: these small tensors gain little from a second one, and on a busy machine
    # OpenMP threads that wait for each other make a step ten times slower.
    threads: int = arg(1, "torch CPU threads (0: torch's default)", min=0)
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
    """A tiny model and a few steps of every stage."""
    return dataclasses.replace(
        cfg,
        base_channels=8,
        channel_mults=(1, 2),
        num_groups=4,
        num_heads=2,
        timesteps=50,
        steps=3,
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


def to_unit(x: torch.Tensor) -> np.ndarray:
    """Model space [-1, 1] -> image space [0, 1], as NumPy."""
    return ((x.float().cpu().clamp(-1, 1) + 1) / 2).numpy()


def save_figures(cfg, run_path, diffusion, model, x_train, device, losses, n_classes):
    """Forward noising, the reverse process (strip and GIF), sample grids, the loss curve."""
    generator = torch.Generator(device).manual_seed(cfg.seed + 1)
    # 1. Forward process q(x_t | x_0) of one training image at evenly spaced t.
    x0 = x_train[:1].to(device)
    ts = np.linspace(0, cfg.timesteps - 1, 8).round().astype(int)
    noise = torch.randn(x0.shape, generator=generator, device=device)
    forward = [diffusion.q_sample(x0, torch.tensor([t], device=device), noise) for t in ts]
    save_image_grid(
        run_path / "forward_process.png",
        to_unit(torch.cat([x0, *forward])),
        nrow=9,
        titles=["x_0", *[f"t={t}" for t in ts]],
    )
    # 2. The reverse process of a fixed batch (one per class), as a GIF and as a strip.
    n_steps = cfg.timesteps if cfg.sampler == "ddpm" else cfg.sample_steps
    y = torch.arange(8, device=device) % n_classes if n_classes else None
    shape = (8, cfg.channels, cfg.image_size, cfg.image_size)
    _, frames = diffusion.sample(
        model,
        shape,
        cfg.sampler,
        cfg.sample_steps,
        cfg.eta,
        y=y,
        guidance=cfg.guidance,
        variance=cfg.variance,
        generator=generator,
        device=device,
        keep_every=max(1, n_steps // 40),
    )
    grids = [images_to_grid(to_unit(f), nrow=8) for f in frames]  # each (H', W')
    save_gif(run_path / "reverse_process.gif", grids + grids[-1:] * 10, 80, scale=4)
    rows = np.linspace(0, len(grids) - 1, min(9, len(grids))).round().astype(int)
    save_image(run_path / "reverse_process.png", np.concatenate([grids[i] for i in rows]), scale=4)
    # 3. Unconditional samples (the model with no label), and the loss curve.
    shape = (64, cfg.channels, cfg.image_size, cfg.image_size)
    samples, _ = diffusion.sample(
        model, shape, cfg.sampler, cfg.sample_steps, cfg.eta, variance=cfg.variance,
        generator=generator, device=device,
    )  # fmt: skip
    save_image_grid(run_path / "samples.png", to_unit(samples), nrow=8)
    steps, values = zip(*losses)
    plot_curves(run_path / "loss.png", {"train": (steps, values)}, "step", "loss", logy=True)


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    run = start_run(f"diffusion on {cfg.dataset}", cfg, PROJECT_DIR)
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    device = get_device(cfg.device)

    # Data, in [-1, 1].
    x_np, y_np, n_classes = load_training_images(
        cfg.dataset, cfg.image_size, cfg.data_dir, cfg.folder, cfg.channels
    )
    x_train = torch.from_numpy(x_np).to(device)  # (N, C, H, W)
    y_train = torch.from_numpy(y_np).to(device) if y_np is not None else None
    if not cfg.conditional:
        n_classes = 0

    # Model, its moving average, the diffusion process, the optimiser.
    ucfg = unet_config(cfg, n_classes)
    model = UNet(ucfg).to(device)
    ema = EMA(model, cfg.ema_decay)
    diffusion = GaussianDiffusion(cfg.timesteps, cfg.schedule, cfg.prediction, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"U-Net with {n_params:,} parameters; {len(x_train)} training images; device {device}")

    def state(step, losses):
        return {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "losses": losses,
            "config": dataclasses.asdict(cfg),
            "unet": dataclasses.asdict(ucfg),
        }

    start, losses = 0, []
    checkpoint_path = run.path / CHECKPOINT
    if cfg.resume and checkpoint_path.exists():
        ckpt = load_checkpoint(checkpoint_path, required=("model", "ema", "optimizer", "step"))
        load_model_state(model, ckpt["model"], checkpoint_path)
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, losses = int(ckpt["step"]), [tuple(p) for p in ckpt["losses"]]
        print(f"resuming from step {start} of {checkpoint_path}")

    # Training: L_simple on random batches, labels dropped with probability p_uncond.
    generator = torch.Generator(device).manual_seed(cfg.seed + start)
    model.train()
    running = []
    for step in progress(range(start, cfg.steps), desc="train"):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        index = torch.randint(
            0, len(x_train), (cfg.batch_size,), device=device, generator=generator
        )
        y = None
        if n_classes:
            y = y_train[index]
            drop = torch.rand(len(y), device=device, generator=generator) < cfg.p_uncond
            y = torch.where(drop, -1, y)  # -1: "no class", what guidance contrasts with
        loss = diffusion.loss(model, x_train[index], y, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model)
        running.append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            losses.append((step + 1, float(np.mean(running))))
            run.log(step=step + 1, loss=losses[-1][1], lr=learning_rate(step, cfg))
            running = []
        if (step + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint_path, state(step + 1, losses))
    save_checkpoint(checkpoint_path, state(cfg.steps, losses))

    # Evaluation with the averaged weights: class-balanced samples, scored by the judge.
    model.load_state_dict(ema.state_dict())
    model.eval()
    n_steps = cfg.timesteps if cfg.sampler == "ddpm" else cfg.sample_steps
    save_figures(cfg, run.path, diffusion, model, x_train, device, losses, n_classes)
    extra = dict(sampler=cfg.sampler, sample_steps=n_steps, final_loss=losses[-1][1])
    if cfg.dataset not in JUDGE_SIZES:  # a folder: no classifier to judge it with
        return run.finish(metric="train_loss", value=losses[-1][1], higher_is_better=False, **extra)
    judge = get_judge(cfg.dataset, data_dir=cfg.data_dir or None, device=device)
    shape = (cfg.eval_samples, 1, cfg.image_size, cfg.image_size)
    generator = torch.Generator(device).manual_seed(cfg.seed + 2)
    labels = torch.arange(cfg.eval_samples, device=device) % n_classes if n_classes else None
    samples, _ = diffusion.sample(
        model,
        shape,
        cfg.sampler,
        cfg.sample_steps,
        cfg.eta,
        y=labels,
        guidance=cfg.guidance,
        variance=cfg.variance,
        generator=generator,
        device=device,
    )
    samples = to_unit(samples)
    report = judge.evaluate(samples, labels.cpu().numpy() if labels is not None else None)
    if labels is not None:  # one row per class
        per_class = min(10, cfg.eval_samples // n_classes)
        rows = [samples[labels.cpu().numpy() == k][:per_class] for k in range(n_classes)]
        save_image_grid(run.path / "class_samples.png", np.concatenate(rows), nrow=per_class)
    extra.update(
        frechet=report["frechet"],
        frechet_floor=report["frechet_floor"],
        classes_covered=report["classes_covered"],
        accuracy=report.get("accuracy"),
        guidance=cfg.guidance if labels is not None else None,
        eval_samples=cfg.eval_samples,
    )
    return run.finish(
        metric="confidence", value=report["confidence"], higher_is_better=True, **extra
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
