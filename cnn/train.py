"""Train an image classifier: the NumPy CNN (default) or LeNet-5, AlexNet, ResNet-18, an MLP.

    python train.py                                  # NumPy CNN on the bundled digits
    python train.py --model lenet5                   # LeNet-5 (PyTorch) on the same digits
    python train.py --preset fashion-resnet --data-dir DATA   # Fashion-MNIST, ResNet-18
    python train.py --model resnet18 --image-dir my_photos/   # one subfolder per class
    torchrun --standalone --nproc_per_node 2 train.py --model resnet18   # 2 processes (GPUs)

The PyTorch models train under torchrun: every process takes its share of each global batch
(--batch-size) and the result is that of one process. The NumPy CNN runs in one process only.
Each run folder gets the checkpoint (model.npz for NumPy, model.pt for PyTorch), metrics.json,
log.jsonl and the figures of report.py. `--resume` continues a killed run exactly: the weights,
the optimizer's moments, every random generator, and the position inside the epoch come back.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy_cnn
import report
from data import augment, channel_stats, draw_augmentation, load_dataset, standardise
from threadpoolctl import threadpool_limits  # scikit-learn's dependency

from shared.cli import Preset, RunConfig, arg, cli_main
from shared.data import IMAGE_DATASETS
from shared.errors import UserError
from shared.logging import progress, start_run
from shared.runtime import (
    PRECISION_HELP,
    PRECISIONS,
    Distributed,
    check_fits_in_memory,
    init_distributed,
    mixed_precision,
    seed_everything,
    set_threads,
)
from shared.state import TrainingState, load_for_resume

PROJECT_DIR = Path(__file__).parent
ALL_MODELS = ("numpy-cnn", "lenet5", "lenet5-modern", "alexnet", "resnet18", "mlp")
# The side each model is built for when --image-size is 0 (LeNet-5's C5 needs exactly 32).
DEFAULT_SIZE = {
    "numpy-cnn": 16,
    "lenet5": 32,
    "lenet5-modern": 32,
    "alexnet": 64,
    "resnet18": 32,
    "mlp": 32,
}
# They decide the data, the model and the schedule: a resumed run must use the same.
MUST_MATCH = (
    "model",
    "dataset",
    "image_dir",
    "image_size",
    "max_train",
    "max_test",
    "seed",
    "epochs",
    "batch_size",
    "optimizer",
    "channels",
    "hidden",
    "batchnorm",
    "width",
    "imagenet_stem",
    "dry_run",
)
FASHION_ANCHOR = "d2l, 10 epochs on a GPU: LeNet 77.9%, AlexNet 88.5%, ResNet-18 89.3%"


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "fashion-resnet": Preset(
            "ResNet-18 (a quarter of the width, 28x28 input) on Fashion-MNIST",
            dict(
                dataset="fashion-mnist",
                model="resnet18",
                width=0.25,
                image_size=28,
                epochs=8,
                batch_size=128,
                optimizer="sgd",
                lr=0.1,
                weight_decay=5e-4,
                augment_pad=2,
                flip=True,
                threads=2,
            ),
            anchor=FASHION_ANCHOR,
            report=("train_accuracy", "epochs"),
        ),
        "fashion-numpy": Preset(
            "the NumPy CNN (32 and 64 channels, 28x28 input) on Fashion-MNIST",
            dict(
                dataset="fashion-mnist",
                image_size=28,
                channels=(32, 64),
                hidden=128,
                epochs=10,
                batch_size=64,
                lr=2e-3,
                augment_pad=2,
                flip=True,
                threads=2,
            ),
            anchor=FASHION_ANCHOR,
            report=("train_accuracy", "epochs"),
        ),
    }
    model: str = arg("numpy-cnn", "which network", choices=ALL_MODELS)
    dataset: str = arg("digits", "training data", choices=tuple(IMAGE_DATASETS))
    image_dir: str = arg("", "train on your own pictures instead: one subfolder per class")
    image_size: int = arg(0, "input side in pixels (0: the model's own, see DEFAULT_SIZE)", min=0)
    epochs: int = arg(20, "passes over the training set", min=1)
    batch_size: int = arg(
        32, "images per step: the global batch, split over torchrun processes", min=1
    )
    optimizer: str = arg("adam", "update rule", choices=("adam", "sgd"))
    lr: float = arg(
        2e-3,
        "peak learning rate for the global batch (cosine decay to 0)",
        min=0,
        min_inclusive=False,
    )
    momentum: float = arg(0.9, "SGD momentum", min=0, max=1)
    weight_decay: float = arg(0.0, "L2 penalty added to the gradients", min=0)
    augment_pad: int = arg(1, "random-crop padding in pixels (0: no shifts)", min=0)
    flip: bool = arg(False, "random horizontal flips (for photos and clothes, not digits)")
    channels: tuple[int, ...] = arg((16, 32), "numpy-cnn: filters of its two convolutions", min=1)
    hidden: int = arg(64, "numpy-cnn: units of its hidden dense layer", min=1)
    batchnorm: bool = arg(True, "numpy-cnn: batch norm after each convolution")
    width: float = arg(1.0, "alexnet/resnet18: channel multiplier", min=0, min_inclusive=False)
    imagenet_stem: bool = arg(False, "resnet18: 7x7 stride-2 stem and max pool (big images)")
    precision: str = arg("auto", "PyTorch models: " + PRECISION_HELP, choices=PRECISIONS)
    threads: int = arg(1, "BLAS/torch threads (small matrices run best on one)", min=1)
    max_train: int = arg(0, "use only the first N training images (0: all)", min=0)
    max_test: int = arg(0, "use only the first N test images (0: all)", min=0)
    checkpoint_every: int = arg(0, "steps between checkpoints (0: after every epoch)", min=0)
    log_every: int = arg(10, "steps between training-loss lines in log.jsonl", min=1)
    figures: bool = arg(True, "write the figures of report.py at the end")

    def check(self):
        size = self.image_size or DEFAULT_SIZE[self.model]
        if self.model.startswith("lenet5") and size != 32:
            raise UserError(f"--model {self.model} needs --image-size 32, got {size}")
        if self.model == "alexnet" and size < 63:
            raise UserError(f"--model alexnet needs --image-size >= 63, got {size}")
        if self.model == "numpy-cnn" and size < 4:
            raise UserError(f"--model numpy-cnn needs --image-size >= 4, got {size}")
        if len(self.channels) != 2:
            raise UserError(f"--channels takes two numbers, got {len(self.channels)}")
        if self.model == "numpy-cnn" and self.precision not in ("auto", "fp32"):
            raise UserError(
                f"--precision {self.precision} is for the PyTorch models, not numpy-cnn"
            )


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """A few images, a tiny network, two epochs of three steps, a checkpoint every two steps."""
    return dataclasses.replace(
        cfg,
        max_train=96,
        max_test=48,
        epochs=2,
        channels=(4, 8),
        hidden=16,
        width=cfg.width / 8,
        checkpoint_every=2,
        log_every=1,
    )


def cosine_lr(step: int, total: int, peak: float) -> float:
    """lr_t = peak * (1 + cos(pi t / T)) / 2 (Loshchilov & Hutter 2017, without restarts)."""
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / total))


def evaluate(predict, inputs: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy, accuracy, predicted classes) on standardised images."""
    logits = predict(inputs)  # (N, classes)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    y_pred = logits.argmax(axis=1)
    return float(-log_probs[np.arange(len(y)), y].mean()), float((y_pred == y).mean()), y_pred


def load_data(cfg: TrainConfig, size: int):
    """(x_train, y_train, x_test, y_test, classes): images (N, C, size, size) in [0, 1]."""
    x_train, y_train, x_test, y_test, classes = load_dataset(
        cfg.dataset, cfg.image_dir, cfg.data_dir, size, cfg.seed
    )
    n_train, n_test = cfg.max_train or len(x_train), cfg.max_test or len(x_test)
    return x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test], classes


def inference_meta(model_cfg, classes, mean, std) -> dict:
    """What inference.py rebuilds the model and its preprocessing from."""
    return dict(
        model_config=dataclasses.asdict(model_cfg),
        classes=list(classes),
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
    )


# ----------------------------------------------------------------------------- the networks


def numpy_model_config(cfg: TrainConfig, in_channels: int, num_classes: int, size: int):
    return numpy_cnn.NumpyCNNConfig(
        in_channels=in_channels,
        image_size=size,
        num_classes=num_classes,
        channels=tuple(cfg.channels),
        hidden=cfg.hidden,
        batchnorm=cfg.batchnorm,
    )


def torch_model_config(cfg: TrainConfig, in_channels: int, num_classes: int, size: int):
    from model import ModelConfig

    return ModelConfig(
        name=cfg.model,
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=size,
        width=cfg.width,
        cifar_stem=not cfg.imagenet_stem,
        hidden=32 if cfg.dry_run else 256,
    )


def check_memory(cfg: TrainConfig, size: int) -> None:
    """Stop before loading or allocating what cannot fit: the resized images (float32, up to
    70,000 of them), weights with their gradients and two optimizer moments, and per image of
    a batch about 20 feature maps as wide as the widest layer, at full resolution, with their
    gradients."""
    channels = 3 if cfg.image_dir else IMAGE_DATASETS[cfg.dataset].channels
    n_images = 1797 if cfg.dataset == "digits" and not cfg.image_dir else 70_000
    if cfg.model == "numpy-cnn":
        model_cfg = numpy_model_config(cfg, channels, 100, size)
        n_params, widest = numpy_cnn.count_parameters(model_cfg), max(cfg.channels)
        flags = f"--image-size {size} --channels {' '.join(map(str, cfg.channels))}"
    else:
        from model import build_model

        from shared.runtime import count_parameters

        model_cfg = torch_model_config(cfg, channels, 100, size)
        n_params = count_parameters(lambda: build_model(model_cfg))
        widest = 64 * cfg.width
        flags = f"--image-size {size} --width {cfg.width:g}"
    images = n_images * channels * size**2 * 4 * 2
    activations = cfg.batch_size * 20 * widest * size**2 * 4 * 2
    check_fits_in_memory(
        images + 16 * n_params + activations, f"{flags} --batch-size {cfg.batch_size}"
    )


def join_processes(cfg: TrainConfig) -> Distributed:
    """torchrun's process group for the PyTorch models; the NumPy CNN trains in one process."""
    if cfg.model != "numpy-cnn":
        return init_distributed(cfg.device)  # gloo on the CPU, NCCL on GPUs
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes > 1:
        raise UserError(
            f"the NumPy CNN trains in one process, not {processes}: run it with python train.py"
        )
    return Distributed(False, rank=0, local_rank=0, world_size=1, device=None)  # needs no torch


def check_batches_split(n_train: int, batch_size: int, dist: Distributed) -> None:
    """Every global batch, the last of an epoch too, must give each process an image."""
    last = n_train - (math.ceil(n_train / batch_size) - 1) * batch_size
    if batch_size < dist.world_size:
        raise UserError(
            f"--batch-size {batch_size} is the global batch: it needs an image per process "
            f"({dist.world_size})"
        )
    if last < dist.world_size:
        raise UserError(
            f"the last batch of each epoch has {last} images, fewer than the {dist.world_size} "
            "processes: change --batch-size or --max-train"
        )


def rank_share(n: int, dist: Distributed) -> slice:
    """This process's contiguous part of a global batch of n images. Where n does not split
    evenly, the first n % N processes take one image more (np.array_split's rule)."""
    per_process, extra = divmod(n, dist.world_size)
    start = dist.rank * per_process + min(dist.rank, extra)
    return slice(start, start + per_process + (dist.rank < extra))


def build(cfg: TrainConfig, in_channels: int, num_classes: int, size: int, rng, dist):
    """(model, its config, train_step, predict, parts): train_step(x, y, lr, share) trains on
    this process's images and returns (its loss, how many it got right); predict maps
    standardised images to logits; parts are what the checkpoint keeps of the model."""
    if cfg.model != "numpy-cnn":
        return build_torch(cfg, in_channels, num_classes, size, dist)
    model_cfg = numpy_model_config(cfg, in_channels, num_classes, size)
    model = numpy_cnn.NumpyCNN(model_cfg, rng)  # rng: initial weights and dropout masks
    params = model.parameters()
    if cfg.optimizer == "adam":
        optimizer = numpy_cnn.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = numpy_cnn.SGD(params, cfg.lr, cfg.momentum, cfg.weight_decay)
    train_step = functools.partial(numpy_step, model, optimizer)
    return (
        model,
        model_cfg,
        train_step,
        model.predict_logits,
        dict(model=model, optimizer=optimizer),
    )


def build_torch(cfg: TrainConfig, in_channels: int, num_classes: int, size: int, dist):
    """The same for a PyTorch model: batch norm over the global batch, DDP under torchrun."""
    import torch
    from model import build_model, predict_logits

    set_threads(cfg.threads)
    model_cfg = torch_model_config(cfg, in_channels, num_classes, size)
    model = build_model(model_cfg).to(dist.device)  # weights from torch's global generator
    model = dist.sync_batch_norm(model)  # statistics pooled over the processes
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), cfg.lr, cfg.momentum, weight_decay=cfg.weight_decay
        )
    amp = mixed_precision(cfg.precision, dist.device)
    # DDP starts every process from rank 0's weights and averages the gradients of each step.
    train_step = functools.partial(torch_step, dist.wrap(model), optimizer, amp)
    parts = dict(model=model, optimizer=optimizer, **({"scaler": amp.scaler} if amp.scaler else {}))
    return model, model_cfg, train_step, lambda x: predict_logits(model, x), parts


def numpy_step(model, optimizer, x, y, lr, share):
    """Forward, loss, backward by hand, update. x: (N, C, H, W) standardised, y: (N,). One
    process: share (the images per process) is N and the loss is the batch mean."""
    model.train(True)
    logits = model.forward(x)  # (N, classes)
    loss, dlogits = numpy_cnn.softmax_cross_entropy(logits, y)
    model.backward(dlogits, input_grad=False)  # fills every layer's grads
    optimizer.lr = lr
    optimizer.step()
    return float(loss), int((logits.argmax(axis=1) == y).sum())


def torch_step(model, optimizer, amp, x, y, lr, share):
    """The same step with autograd, under autocast. The loss is the sum over this process's
    images / share, share = global batch / processes: DDP averages the processes' gradients,
    which gives the gradient of the global batch's mean loss, as one process would."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    model.train()
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    with amp.autocast():
        logits = model(x)  # (n, classes), bfloat16 under --precision bf16
    loss = F.cross_entropy(logits.float(), y, reduction="sum") / share  # in float32
    optimizer.zero_grad(set_to_none=True)
    amp.backward(loss)
    for group in optimizer.param_groups:
        group["lr"] = lr
    amp.step(optimizer)
    return loss.item(), int((logits.argmax(dim=1) == y).sum())


def evaluation_record(predict, test_in: np.ndarray, y_test: np.ndarray) -> dict:
    test_loss, test_accuracy, _ = evaluate(predict, test_in, y_test)
    return dict(test_loss=test_loss, test_accuracy=test_accuracy)


def finish(cfg: TrainConfig, run, model, predict, x_test, test_in, y_test, classes) -> dict:
    """The final numbers and the figures (rank 0 only)."""
    test_loss, test_accuracy, y_pred = evaluate(predict, test_in, y_test)
    if cfg.figures:
        report.write_figures(run.path, model, predict, x_test, test_in, y_test, y_pred, classes)
    return run.finish(
        metric="test_accuracy",
        value=test_accuracy,
        higher_is_better=True,
        model=cfg.model,
        dataset=cfg.image_dir or cfg.dataset,
        train_accuracy=report.last_epoch(run.path).get("train_accuracy"),
        test_loss=test_loss,
        epochs=cfg.epochs,
    )


# ----------------------------------------------------------------------------- the run


def main(cfg: TrainConfig) -> dict:
    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    dist = join_processes(cfg)
    checkpoint = "model.npz" if cfg.model == "numpy-cnn" else "model.pt"
    ckpt = load_for_resume(cfg, PROJECT_DIR, checkpoint, must_match=MUST_MATCH)
    size = cfg.image_size or DEFAULT_SIZE[cfg.model]
    check_memory(cfg, size)
    seed_everything(cfg.seed + dist.rank)  # torch's initial weights and dropout, per process
    rng = np.random.default_rng(cfg.seed)  # augmentation, NumPy CNN: alike on every process
    threadpool_limits(cfg.threads)  # many threads on small matrices are slower, not faster

    # 1. data: resized for the model, standardised with the training set's statistics
    x_train, y_train, x_test, y_test, classes = load_data(cfg, size)
    check_batches_split(len(x_train), cfg.batch_size, dist)
    mean, std = channel_stats(x_train)
    test_in = standardise(x_test, mean, std)
    task = f"cnn: {cfg.model} on {cfg.image_dir or cfg.dataset}"
    run = start_run(task, cfg, PROJECT_DIR, is_main=dist.is_main)  # only rank 0 writes

    # 2. model and optimizer; everything the next step depends on is in `state`
    model, model_cfg, train_step, predict, parts = build(
        cfg, x_train.shape[1], len(classes), size, rng, dist
    )
    state = TrainingState(run.path / checkpoint, cfg, dist=dist, generator=rng, **parts)
    start = state.restore(ckpt)  # each process gets its own global generators back
    epoch_loss = state.extra.get("epoch_loss", 0.0)  # sums over the epoch so far
    epoch_correct = state.extra.get("epoch_correct", 0)
    for_inference = inference_meta(model_cfg, classes, mean, std)

    # 3. train: each process takes its share of every global batch; evaluation after each epoch
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    every = cfg.checkpoint_every or steps_per_epoch
    steps = range(start, total)
    for step in progress(steps, desc="train", initial=start, total=total, disable=not dist.is_main):
        epoch, b = divmod(step, steps_per_epoch)
        if b == 0 or step == start:  # the order of an epoch depends on (seed, epoch) only
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(x_train))
        index = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]  # the global batch
        draws = draw_augmentation(rng, len(index), cfg.augment_pad, cfg.flip)  # for all of it
        mine = rank_share(len(index), dist)
        x = standardise(augment(x_train[index[mine]], draws[mine], cfg.augment_pad), mean, std)
        lr = cosine_lr(step, total, cfg.lr)
        loss, correct = train_step(x, y_train[index[mine]], lr, len(index) / dist.world_size)
        loss = dist.all_reduce_mean(loss)  # the mean loss of the global batch
        epoch_loss += loss
        epoch_correct += round(dist.all_reduce_mean(correct) * dist.world_size)
        record = {"loss": loss} if (step + 1) % cfg.log_every == 0 else {}
        if b + 1 == steps_per_epoch:
            if dist.is_main:  # no collective in here: the others wait in the next step
                record.update(epoch=epoch + 1, train_loss=epoch_loss / steps_per_epoch)
                record.update(train_accuracy=epoch_correct / len(x_train))
                record.update(evaluation_record(predict, test_in, y_test))
                print(report.epoch_line(record))
            epoch_loss, epoch_correct = 0.0, 0
        if record:
            run.log(step=step + 1, **record)
        if (step + 1) % every == 0 or b + 1 == steps_per_epoch:  # on every process, rank 0 writes
            state.save(
                step + 1, epoch_loss=epoch_loss, epoch_correct=epoch_correct, **for_inference
            )

    # 4. the final numbers and the figures, from rank 0
    metrics = (
        finish(cfg, run, model, predict, x_test, test_in, y_test, classes) if dist.is_main else {}
    )
    dist.close()
    return metrics


if __name__ == "__main__":
    cli_main(main, TrainConfig)
