"""Train an image GAN: the original MLP GAN, DCGAN, LSGAN or WGAN-GP, with spectral norm and
class conditioning as options. (The NumPy GAN on 2-D points trains with `python gan2d.py`.)

    python train.py                                  # DCGAN on the bundled 8x8 digits (at 16x16)
    python train.py --model wgan-gp --spectral-norm  # gan, dcgan, lsgan, wgan-gp; --loss hinge
    python train.py --preset mnist-conditional --data-dir DATA
    python train.py --dataset folder --image-dir DIR --channels 3 --image-size 32
    torchrun --standalone --nproc_per_node 2 train.py   # the same run, in two processes
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import report
import torch
from data import NATIVE_SIZES, load_training_images
from model import (
    LOSSES,
    MODEL_LOSS,
    MODELS,
    GANConfig,
    ImageGAN,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    n_parameters,
)

from shared.cli import Preset, RunConfig, arg, cli_main
from shared.data import IMAGE_DATASETS, load_images, resize_images
from shared.errors import UserError
from shared.logging import progress, start_run
from shared.metrics import frechet_distance, get_judge
from shared.plots import images_to_grid, save_image
from shared.runtime import (
    PRECISION_HELP,
    PRECISIONS,
    MixedPrecision,
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
FOLDER_SIZE = 32  # default side for --dataset folder
# They decide the data, the networks and the optimisers: a resumed run must use the same.
MUST_MATCH = (
    "model",
    "loss",
    "dataset",
    "image_dir",
    "image_size",
    "channels",
    "conditional",
    "spectral_norm",
    "z_dim",
    "width",
    "batch_size",
    "n_critic",
    "lr",
    "steps_per_epoch",
)
# 6 epochs of 937 generator steps; both cores. WGAN-GP's critic steps 5 times per generator
# step, so it gets 2 epochs for about the same time.
MNIST_RECIPE = dict(dataset="mnist", epochs=6, save_every=1, threads=2)


def mnist_preset(model: str, what: str, **flags) -> Preset:
    return Preset(
        f"{what} on MNIST at 28x28",
        {**MNIST_RECIPE, "model": model, **flags},
        anchor="the DCGAN paper's architecture guidelines (Radford et al., 2016)",
        report=("frechet_floor", "accuracy", "classes_covered"),
    )


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "mnist-conditional": mnist_preset("dcgan", "class-conditional DCGAN", conditional=True),
        "mnist-dcgan": mnist_preset("dcgan", "DCGAN"),
        "mnist-wgan-gp": mnist_preset("wgan-gp", "WGAN-GP", epochs=2),
        "mnist-lsgan": mnist_preset("lsgan", "LSGAN"),
        "mnist-sn": mnist_preset(
            "dcgan", "DCGAN, spectral norm, hinge loss", spectral_norm=True, loss="hinge"
        ),
    }
    model: str = arg("dcgan", "gan (the original MLP GAN), dcgan, lsgan or wgan-gp", choices=MODELS)
    dataset: str = arg(
        "digits",
        "training images (folder: your own, --image-dir)",
        choices=(*NATIVE_SIZES, "folder"),
    )
    image_dir: str = arg("", "--dataset folder: a folder of pictures, read recursively")
    image_size: int = arg(
        0, "image side, a multiple of 4 (0: the dataset's own; 32 for a folder)", min=0
    )
    channels: int = arg(1, "--dataset folder: 1 (grey) or 3 (colour)", choices=(1, 3))
    loss: str = arg(
        "auto",
        "auto: the model's own (non-saturating for gan and dcgan)",
        choices=("auto", *LOSSES),
    )
    spectral_norm: bool = arg(False, "spectral norm on every discriminator layer")
    conditional: bool = arg(False, "condition both networks on the class label")
    epochs: int = arg(100, "passes of the generator over the training set", min=1)
    steps_per_epoch: int = arg(
        0, "generator steps per epoch (0: training images / batch size)", min=0
    )
    batch_size: int = arg(
        64, "images per batch: the global batch, split over torchrun processes", min=1
    )
    z_dim: int = arg(64, "latent size", min=1)
    width: int = arg(64, "channels of the first conv layer (MLP: x4 hidden units)", min=1)
    lr: float = arg(
        0.0, "Adam learning rate, for the global batch (0: 2e-4, or 1e-4 for wgan-gp)", min=0
    )
    n_critic: int = arg(
        0, "discriminator updates per generator update (0: 5 for wgan-gp, else 1)", min=0
    )
    gp_weight: float = arg(10.0, "--model wgan-gp: weight lambda of the gradient penalty", min=0)
    num_eval: int = arg(0, "samples judged at the end (0: as many as the real test images)", min=0)
    save_every: int = arg(10, "epochs between checkpoints", min=1)
    log_every: int = arg(10, "generator steps between log lines", min=1)
    precision: str = arg("auto", PRECISION_HELP, choices=PRECISIONS)
    threads: int = arg(0, "torch CPU threads (0: torch's default)", min=0)

    def check(self):
        if self.image_size % 4:
            raise UserError(f"--image-size must be a multiple of 4, got {self.image_size}")
        if (self.dataset == "folder") != bool(self.image_dir):
            raise UserError("--dataset folder and --image-dir DIR go together")
        if self.dataset == "folder" and self.conditional:
            raise UserError("a folder of images has no labels: --conditional needs a dataset")
        if self.dataset != "folder" and self.channels != 1:
            raise UserError(f"{self.dataset} is grey: --channels 3 applies to --dataset folder")


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """4 epochs of 2 steps of a tiny model; checkpoints at steps 4 and 8, every step logged."""
    return dataclasses.replace(
        cfg,
        epochs=4,
        steps_per_epoch=2,
        batch_size=16,
        width=8,
        num_eval=64,
        save_every=2,
        log_every=1,
    )


def check_memory(config: GANConfig, cfg: TrainConfig, device) -> None:
    """Weights, gradients and Adam's two moments (16 bytes a parameter), plus a generous bound on
    one step's activations: about 12 feature maps of W x S x S floats per image, kept twice."""
    n_params = count_parameters(lambda: ImageGAN(config))
    activations = (
        2 * 4 * 12 * cfg.batch_size * (config.width + config.channels) * config.image_size**2
    )
    what = f"--width {cfg.width} --image-size {config.image_size} --batch-size {cfg.batch_size}"
    check_fits_in_memory(16 * n_params + activations, what, device)


def snapshot(gan: ImageGAN, z, labels, run_path: Path, epoch: int) -> np.ndarray:
    """The fixed latents' samples as one uint8 grid, also written to samples/epoch_NNN.png."""
    gan.eval()
    grid = images_to_grid(gan.sample(z, labels).cpu(), nrow=8)  # (H, W) or (H, W, 3)
    gan.train()
    save_image(run_path / "samples" / f"epoch_{epoch:03d}.png", grid, scale=4)
    return (grid * 255).round().astype(np.uint8)


def evaluate(gan: ImageGAN, cfg: TrainConfig, x_train, device) -> tuple[dict, torch.Tensor, object]:
    """The judge's Frechet distance (vs the test set), its floor and class coverage; a folder,
    which has no judge: the Frechet distance between 8x8 thumbnails of samples and images.

    Also returns each sample's class for samples_by_class.png (None for a folder): for a
    conditional model the class asked for, which the judge nearly always reads back; else the
    class the judge reads."""
    if cfg.dataset == "folder":
        num_eval = cfg.num_eval or len(x_train)
    else:
        num_eval = cfg.num_eval or len(load_images(cfg.dataset, "test", cfg.data_dir, size=8)[1])
    K = gan.config.n_classes
    z = torch.randn(num_eval, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 2))
    labels = torch.arange(num_eval) % K if K else None
    samples = gan.eval().sample(z.to(device), None if labels is None else labels.to(device)).cpu()
    if cfg.dataset == "folder":
        thumbs = lambda x: resize_images(np.asarray(x, dtype=np.float64), 8).reshape(len(x), -1)  # noqa: E731
        scores = {"frechet_thumbnails": frechet_distance(thumbs(samples), thumbs(x_train))}
        return scores, samples, None
    judge = get_judge(cfg.dataset, data_dir=cfg.data_dir, device=device)
    asked = None if labels is None else labels.numpy()
    scores, seen = judge.evaluate(samples, asked, return_predicted=True)
    scores.update(num_eval=num_eval, judge_test_accuracy=judge.test_accuracy)
    # The class grid: rows by the asked-for class, or by the judge's reading when none was asked.
    return scores, samples, asked if K else seen


def gan_config(cfg: TrainConfig) -> GANConfig:
    """The networks' config: the model's own loss unless --loss, the dataset's side and classes."""
    return GANConfig(
        model=cfg.model,
        loss=MODEL_LOSS[cfg.model] if cfg.loss == "auto" else cfg.loss,
        image_size=cfg.image_size or NATIVE_SIZES.get(cfg.dataset, FOLDER_SIZE),
        channels=cfg.channels,
        z_dim=cfg.z_dim,
        width=cfg.width,
        n_classes=len(IMAGE_DATASETS[cfg.dataset].classes) if cfg.conditional else 0,
        spectral_norm=cfg.spectral_norm,
    )


def optimizers(gan: ImageGAN, cfg: TrainConfig):
    """Adam for each player: DCGAN's lr 2e-4 and beta1 = 0.5; WGAN-GP's lr 1e-4 and no
    momentum (beta1 = 0, beta2 = 0.9)."""
    wgan = cfg.model == "wgan-gp"
    lr = cfg.lr or (1e-4 if wgan else 2e-4)
    betas = (0.0, 0.9) if wgan else (0.5, 0.999)
    return (
        torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=betas),
        torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=betas),
    )


def epoch_steps(cfg: TrainConfig, n_images: int) -> int:
    """Generator steps per epoch: one pass over the images in global batches (any process count)."""
    return cfg.steps_per_epoch or max(1, n_images // cfg.batch_size)


@dataclass
class Player:
    """One network of the game and what trains it: the network, its DDP wrapper (the network
    itself in one process), its Adam optimiser and its mixed precision (autocast, and under
    fp16 a loss scale of its own: the two players' gradients differ in size)."""

    net: torch.nn.Module
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    amp: MixedPrecision

    def update(self, loss) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.amp.backward(loss)  # under DDP the gradients are averaged over the ranks here
        self.amp.step(self.optimizer)


def build_players(gan: ImageGAN, cfg: TrainConfig, dist) -> tuple[Player, Player]:
    """Batch norm pooled over the ranks, then each network's optimiser and precision. (The
    optimisers come after sync_batch_norm, which puts in new batch-norm layers.)"""
    dist.sync_batch_norm(gan)  # every BatchNorm normalises over the global batch
    opt_G, opt_D = optimizers(gan, cfg)
    amp_G, amp_D = (mixed_precision(cfg.precision, dist.device) for _ in range(2))
    G = Player(gan.generator, gan.generator, opt_G, amp_G)  # DDP wraps them after the restore
    D = Player(gan.discriminator, gan.discriminator, opt_D, amp_D)
    return G, D


def my_share(dist, draw):
    """This rank's slice of a draw made at the global batch size, moved to this rank's device.

    Every rank draws the whole global batch from torch's generator, on the CPU and seeded alike
    everywhere, and keeps its own part: N processes see exactly the examples of one process.
    """
    return dist.shard(draw).to(dist.device)


def discriminator_step(D: Player, G: Player, x_real, y, z, epsilon, cfg, loss_kind: str):
    """One update of D on this rank's share of a real and a generated batch.

    D's DDP wrapper runs on the real, the generated (and the penalty's mixed) images before the
    one backward: autograd sums each weight's gradient over the calls, DDP averages the sum
    over the ranks once, so the gradient is that of the loss of the global batch.
    """
    with D.amp.autocast():
        with torch.no_grad():  # fakes get the real batch's labels: the penalty pairs them
            x_fake = G.net(z, y).float()  # float32, as the real images the penalty mixes in
        loss = discriminator_loss(loss_kind, D.ddp(x_real, y), D.ddp(x_fake, y))
        if epsilon is not None:  # WGAN-GP: + lambda E[(||grad D(x_hat)|| - 1)^2]
            scale = D.amp.scaler.get_scale() if D.amp.scaler else 1.0  # fp16's loss scale
            penalty = gradient_penalty(D.ddp, x_real, x_fake, y, epsilon, scale)
            loss = loss + cfg.gp_weight * penalty
    D.update(loss)
    return loss.detach()


def generator_step(G: Player, D: Player, z, y, loss_kind: str):
    """One update of G against the discriminator as it now stands.

    It goes through D's plain module, not D's DDP wrapper: the gradient that reaches G through
    D is the same (D's weights are equal on every rank), while D's own gradients of this step
    are thrown away (D zeroes them before its next backward) and need no averaging.
    """
    with G.amp.autocast():
        loss = generator_loss(loss_kind, D.net(G.ddp(z, y), y))
    G.update(loss)
    return loss.detach()


def train(gan: ImageGAN, G: Player, D: Player, data, cfg, run, state, start: int, dist) -> list:
    """The game from step `start`: n_critic updates of D, then one of G, per generator step.
    Returns the grids of the fixed latents after each epoch (drawn by rank 0 only)."""
    images, labels = data
    K, B, Z, loss_kind = gan.config.n_classes, cfg.batch_size, cfg.z_dim, gan.config.loss
    n_critic = cfg.n_critic or (5 if cfg.model == "wgan-gp" else 1)  # WGAN-GP's recipe: 5
    fixed = torch.Generator().manual_seed(cfg.seed + 1)
    fixed_z = torch.randn(64, Z, generator=fixed).to(dist.device)
    fixed_labels = (torch.arange(64) % K).to(dist.device) if K else None
    frames = [np.asarray(f) for f in state.extra.get("frames", [])]  # the grid after each epoch
    steps_per_epoch = epoch_steps(cfg, len(images))
    total = cfg.epochs * steps_per_epoch
    steps = range(start, total)
    for step in progress(steps, desc="train", total=total, initial=start, disable=not dist.is_main):
        # 1. discriminator (critic): n_critic updates on fresh real and generated batches
        for _ in range(n_critic):
            index = my_share(dist, torch.randint(0, len(images), (B,)))
            z = my_share(dist, torch.randn(B, Z))
            epsilon = my_share(dist, torch.rand(B, 1, 1, 1)) if cfg.model == "wgan-gp" else None
            y = None if labels is None else labels[index]
            loss_D = discriminator_step(D, G, images[index], y, z, epsilon, cfg, loss_kind)
        # 2. generator: one update against the discriminator as it now stands
        y_fake = my_share(dist, torch.randint(0, K, (B,))) if K else None
        loss_G = generator_step(G, D, my_share(dist, torch.randn(B, Z)), y_fake, loss_kind)
        if (step + 1) % cfg.log_every == 0:  # the global batch's losses: the mean of the ranks'
            losses = dict(loss_D=dist.all_reduce_mean(loss_D), loss_G=dist.all_reduce_mean(loss_G))
            run.log(step=step + 1, **losses)
        if (step + 1) % steps_per_epoch == 0:  # an epoch ends: a GIF frame, maybe a checkpoint
            epoch = (step + 1) // steps_per_epoch
            if dist.is_main:
                frames.append(snapshot(gan, fixed_z, fixed_labels, run.path, epoch))
            if epoch % cfg.save_every == 0 or epoch == cfg.epochs:  # on every rank: see state.save
                so_far = np.stack(frames) if dist.is_main else None  # only rank 0 writes
                state.save(step + 1, config=asdict(gan.config), frames=so_far)
    return frames


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    dist = init_distributed(cfg.device)
    device = dist.device
    dist.shard(range(cfg.batch_size))  # a batch that does not split: one line, nothing written
    ckpt = load_for_resume(cfg, PROJECT, CHECKPOINT, must_match=MUST_MATCH)
    seed_everything(cfg.seed)  # alike on every rank: the same weights, batches and latents
    set_threads(cfg.threads)
    config = gan_config(cfg)
    check_memory(config, cfg, device)
    x_train, y_train, _ = load_training_images(
        cfg.dataset, config.image_size, cfg.data_dir, cfg.image_dir, config.channels, cfg.seed
    )
    images = torch.from_numpy(x_train).to(device) * 2 - 1  # (N, C, S, S) in tanh's [-1, 1]
    labels = torch.from_numpy(y_train).to(device) if cfg.conditional else None
    name = cfg.model + (" + spectral norm" if cfg.spectral_norm else "")
    name += f" ({config.loss} loss)" if cfg.loss != "auto" else ""
    run = start_run(f"{name} on {cfg.dataset}", cfg, PROJECT, is_main=dist.is_main)
    gan = ImageGAN(config).to(device)
    G, D = build_players(gan, cfg, dist)
    scalers = {f"scaler_{n}": p.amp.scaler for n, p in (("G", G), ("D", D)) if p.amp.scaler}
    state = TrainingState(
        run.path / CHECKPOINT, cfg, dist=dist, model=gan, opt_G=G.optimizer, opt_D=D.optimizer,
        **scalers,
    )  # fmt: skip
    start = state.restore(ckpt)  # also torch's generator, which draws every batch and latent
    G.ddp, D.ddp = dist.wrap(G.net), dist.wrap(D.net)  # after the restore: rank 0's weights
    if dist.is_main:
        processes = f", {dist.world_size} processes" if dist.enabled else ""
        n_G, n_D = n_parameters(G.net), n_parameters(D.net)
        print(f"{name}: G {n_G:,} and D {n_D:,} parameters on {device}, {G.amp.name}{processes}")
        (run.path / "samples").mkdir(exist_ok=True)
    gan.train()
    frames = train(gan, G, D, (images, labels), cfg, run, state, start, dist)
    metrics = finish(gan, cfg, run, frames, x_train, name, dist) if dist.is_main else {}
    dist.close()
    return metrics


def finish(gan: ImageGAN, cfg: TrainConfig, run, frames, x_train, name: str, dist) -> dict:
    """Rank 0 alone judges the samples, draws the figures and writes metrics.json."""
    scores, samples, classes = evaluate(gan, cfg, x_train, dist.device)
    report.write_image_figures(run.path, frames, samples.numpy(), name)
    if classes is not None:  # a judged dataset: one row per class
        how = "asked for" if gan.config.n_classes else "read by the judge"
        names = IMAGE_DATASETS[cfg.dataset].classes
        title = f"{name} on {cfg.dataset}: samples by the class {how}"
        report.plot_by_class(
            run.path / "samples_by_class.png", samples.numpy(), classes, names, title=title
        )
    metric = "frechet_thumbnails" if cfg.dataset == "folder" else "frechet"
    return run.finish(
        metric=metric,
        value=scores.pop(metric),
        higher_is_better=False,
        **scores,
        generator_steps=cfg.epochs * epoch_steps(cfg, len(x_train)),
        processes=dist.world_size,
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
