"""Train an image classifier: the NumPy CNN (default) or LeNet-5, AlexNet, ResNet-18, an MLP.

    python train.py                                  # NumPy CNN on the bundled digits
    python train.py --model lenet5 --dataset mnist --data-dir /work/shared/data
    python train.py --model resnet18 --image-dir my_photos/   # one subfolder per class

Each run folder gets the checkpoint (model.npz for NumPy, model.pt for PyTorch), metrics.json,
log.jsonl, loss and accuracy curves, a confusion matrix, misclassified test images, the
first-layer filters and the feature maps of one test image.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from data import augment, channel_stats, load_dataset, standardise
from report import write_figures

from shared.checkpoint import load_arrays, load_checkpoint, save_arrays, save_checkpoint
from shared.cli import RunConfig, arg, cli_main
from shared.data import IMAGE_DATASETS
from shared.errors import UserError
from shared.logging import progress, start_run
from shared.runtime import seed_everything

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


@dataclass
class TrainConfig(RunConfig):
    model: str = arg("numpy-cnn", "which network", choices=ALL_MODELS)
    dataset: str = arg("digits", "training data", choices=tuple(IMAGE_DATASETS))
    image_dir: str = arg("", "train on your own pictures instead: one subfolder per class")
    image_size: int = arg(0, "input side in pixels (0: the model's own, see DEFAULT_SIZE)", min=0)
    epochs: int = arg(20, "passes over the training set", min=1)
    batch_size: int = arg(32, "images per step", min=1)
    optimizer: str = arg("adam", "update rule", choices=("adam", "sgd"))
    lr: float = arg(2e-3, "peak learning rate (cosine decay to 0)", min=0, min_inclusive=False)
    momentum: float = arg(0.9, "SGD momentum", min=0, max=1)
    weight_decay: float = arg(0.0, "L2 penalty added to the gradients", min=0)
    augment_pad: int = arg(1, "random-crop padding in pixels (0: no shifts)", min=0)
    flip: bool = arg(False, "random horizontal flips (for photos, not digits)")
    batchnorm: bool = arg(True, "numpy-cnn: batch norm after each convolution")
    width: float = arg(1.0, "alexnet/resnet18: channel multiplier", min=0, min_inclusive=False)
    imagenet_stem: bool = arg(False, "resnet18: 7x7 stride-2 stem and max pool (big images)")
    threads: int = arg(1, "BLAS/torch threads (small matrices run best on one)", min=1)
    max_train: int = arg(0, "use only the first N training images (0: all)", min=0)

    def check(self):
        size = self.image_size or DEFAULT_SIZE[self.model]
        if self.model.startswith("lenet5") and size != 32:
            raise UserError(f"--model {self.model} needs --image-size 32, got {size}")
        if self.model == "alexnet" and size < 63:
            raise UserError(f"--model alexnet needs --image-size >= 63, got {size}")
        if self.model == "numpy-cnn" and size % 4:
            raise UserError(f"--model numpy-cnn needs --image-size divisible by 4, got {size}")


def cosine_lr(step: int, total: int, peak: float) -> float:
    """lr_t = peak * (1 + cos(pi t / T)) / 2 (Loshchilov & Hutter 2017, without restarts)."""
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / total))


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean -log softmax(logits)[y], for evaluation."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


# ----------------------------------------------------------------------------- NumPy CNN


class NumpyLearner:
    """The NumPy CNN with its optimizer: train a batch, predict, save, load."""

    checkpoint_name = "model.npz"

    def __init__(self, cfg: TrainConfig, in_channels: int, num_classes: int, size: int, rng):
        from numpy_cnn import SGD, Adam, NumpyCNN, NumpyCNNConfig, softmax_cross_entropy

        small = cfg.dry_run
        self.model_cfg = NumpyCNNConfig(
            in_channels=in_channels,
            image_size=size,
            num_classes=num_classes,
            channels=(4, 8) if small else (16, 32),
            hidden=16 if small else 64,
            batchnorm=cfg.batchnorm,
        )
        self.model = NumpyCNN(self.model_cfg, rng)
        params = self.model.parameters()
        if cfg.optimizer == "adam":
            self.opt = Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = SGD(params, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.loss_fn = softmax_cross_entropy

    def train_step(self, x, y, lr):  # x: (N, C, H, W) standardised, y: (N,)
        self.model.train(True)
        self.opt.lr = lr
        logits = self.model.forward(x)
        loss, dlogits = self.loss_fn(logits, y)
        self.model.backward(dlogits, input_grad=False)
        self.opt.step()
        return float(loss), logits.argmax(axis=1)

    def predict_logits(self, x, batch=512):
        self.model.train(False)
        return np.concatenate(
            [self.model.forward(x[i : i + batch]) for i in range(0, len(x), batch)]
        )

    def filters_and_maps(self, x_one):
        self.model.train(False)
        return self.model.first_layer_filters(), self.model.feature_maps(x_one)[0]

    def save(self, path: Path, meta: dict):
        arrays = dict(self.model.state_dict())
        arrays.update({f"opt.{k}": v for k, v in self.opt.state.items()})
        adam_steps = getattr(self.opt, "t", 0)  # Adam's bias correction needs the step count
        meta = {**meta, "model_config": dataclasses.asdict(self.model_cfg), "opt_t": adam_steps}
        save_arrays(path, arrays, meta)

    def load(self, path: Path) -> dict:
        arrays, meta = load_arrays(path)
        problems = self.model.load_state_dict(arrays)
        if problems:
            raise UserError(f"checkpoint {path} does not fit the model: {', '.join(problems[:3])}")
        missing = [k for k in self.opt.state if f"opt.{k}" not in arrays]
        if missing:
            raise UserError(
                f"checkpoint {path} holds no {type(self.opt).__name__} state: "
                "resume with the --optimizer it was trained with"
            )
        for k, v in self.opt.state.items():
            v[...] = arrays[f"opt.{k}"]
        if hasattr(self.opt, "t"):
            self.opt.t = meta["opt_t"]
        return meta


# ----------------------------------------------------------------------------- PyTorch


class TorchLearner:
    """One of model.py's networks with its optimizer: the same interface as NumpyLearner."""

    checkpoint_name = "model.pt"

    def __init__(self, cfg: TrainConfig, in_channels: int, num_classes: int, size: int, rng):
        import torch
        from model import ModelConfig, build_model

        from shared.runtime import get_device, set_threads

        set_threads(cfg.threads)
        self.torch = torch
        self.device = get_device(cfg.device)
        self.model_cfg = ModelConfig(
            name=cfg.model,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=size,
            width=cfg.width / 8 if cfg.dry_run else cfg.width,
            cifar_stem=not cfg.imagenet_stem,
            hidden=32 if cfg.dry_run else 256,
        )
        self.model = build_model(self.model_cfg).to(self.device)
        if cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(
                self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
            )
        else:
            self.opt = torch.optim.SGD(
                self.model.parameters(), cfg.lr, cfg.momentum, weight_decay=cfg.weight_decay
            )

    def train_step(self, x, y, lr):
        torch = self.torch
        self.model.train()
        for group in self.opt.param_groups:
            group["lr"] = lr
        x, y = torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item(), logits.argmax(dim=1).cpu().numpy()

    def predict_logits(self, x, batch=512):
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            parts = [
                self.model(torch.from_numpy(x[i : i + batch]).to(self.device)).cpu().numpy()
                for i in range(0, len(x), batch)
            ]
        return np.concatenate(parts)

    def filters_and_maps(self, x_one):
        from model import first_conv

        conv = first_conv(self.model)
        if conv is None:  # the MLP has no filters
            return None, None
        self.model.eval()
        with self.torch.no_grad():
            maps = conv(self.torch.from_numpy(x_one).to(self.device))[0]  # (F, H, W)
        return conv.weight.detach().cpu().numpy(), maps.cpu().numpy()

    def save(self, path: Path, meta: dict):
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "model_config": dataclasses.asdict(self.model_cfg),
            **meta,
        }
        save_checkpoint(path, state)

    def load(self, path: Path) -> dict:
        from shared.checkpoint import load_model_state

        ckpt = load_checkpoint(path, required=("model", "optimizer", "epoch"))
        load_model_state(self.model, ckpt["model"], path)
        self.opt.load_state_dict(ckpt["optimizer"])
        return ckpt


# ----------------------------------------------------------------------------- the run


def check_memory(cfg: TrainConfig, size: int) -> None:
    """Stop before resizing or allocating what cannot fit: the resized images (float32, up to
    70,000 of them and 3 channels, as the largest built-in datasets) and, per image of a
    batch, about 20 feature maps of 64 x width channels at full resolution with gradients."""
    from shared.runtime import check_fits_in_memory

    n_images = 1797 if cfg.dataset == "digits" and not cfg.image_dir else 70_000
    images = n_images * 3 * size**2 * 4
    activations = cfg.batch_size * 20 * 64 * cfg.width * size**2 * 4 * 2
    flags = f"--image-size {size} --width {cfg.width:g} --batch-size {cfg.batch_size}"
    check_fits_in_memory(images + activations, flags)


def main(cfg: TrainConfig) -> dict:
    check_memory(cfg, cfg.image_size or DEFAULT_SIZE[cfg.model])
    run = start_run(f"cnn: {cfg.model} on {cfg.image_dir or cfg.dataset}", cfg, PROJECT_DIR)
    rng = seed_everything(cfg.seed)
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    threadpool_limits(cfg.threads)  # many threads on small matrices are slower, not faster

    # 1. data: resized for the model, standardised with the training set's statistics
    size = cfg.image_size or DEFAULT_SIZE[cfg.model]
    x_train, y_train, x_test, y_test, classes = load_dataset(
        cfg.dataset, cfg.image_dir, cfg.data_dir, size, cfg.seed
    )
    if cfg.max_train:
        x_train, y_train = x_train[: cfg.max_train], y_train[: cfg.max_train]
    if cfg.dry_run:
        x_train, y_train, x_test, y_test = x_train[:96], y_train[:96], x_test[:48], y_test[:48]
    mean, std = channel_stats(x_train)
    test_in = standardise(x_test, mean, std)
    in_channels, num_classes = x_train.shape[1], len(classes)

    # 2. model and optimizer
    Learner = NumpyLearner if cfg.model == "numpy-cnn" else TorchLearner
    learner = Learner(cfg, in_channels, num_classes, size, rng)
    ckpt_path = run.path / Learner.checkpoint_name
    history = {
        k: [] for k in ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
    }
    start_epoch = 0
    if cfg.resume:
        meta = learner.load(ckpt_path)
        history, start_epoch = meta["history"], meta["epoch"]
        print(f"resumed from {ckpt_path} after epoch {start_epoch}")

    # 3. train: augmented batches, cosine learning rate, evaluation after every epoch
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    epochs = 1 if cfg.dry_run else cfg.epochs
    total_steps = epochs * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(x_train))
        losses, correct = [], 0
        for b in progress(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}"):
            index = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = augment(x_train[index], rng, cfg.augment_pad, cfg.flip)
            lr = cosine_lr(epoch * steps_per_epoch + b, total_steps, cfg.lr)
            loss, pred = learner.train_step(standardise(x, mean, std), y_train[index], lr)
            losses.append(loss)
            correct += int((pred == y_train[index]).sum())
        logits = learner.predict_logits(test_in)
        test_loss = cross_entropy(logits, y_test)
        test_acc = float((logits.argmax(axis=1) == y_test).mean())
        train_loss, train_acc = float(np.mean(losses)), correct / len(x_train)
        for key, value in zip(history, (epoch + 1, train_loss, train_acc, test_loss, test_acc)):
            history[key].append(value)
        run.log(epoch=epoch + 1, **{k: v[-1] for k, v in history.items() if k != "epoch"})
        print(
            f"epoch {epoch + 1:3d}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
            f"test loss {test_loss:.4f} acc {test_acc:.4f}"
        )
        meta = {
            "epoch": epoch + 1,
            "history": history,
            "config": dataclasses.asdict(cfg),
            "classes": list(classes),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        }
        learner.save(ckpt_path, meta)  # atomic, every epoch: --resume continues from here

    # 4. figures and the final numbers
    logits = learner.predict_logits(test_in)
    y_pred = logits.argmax(axis=1)
    filters, maps = learner.filters_and_maps(test_in[:1])
    write_figures(run.path, history, x_test, y_test, y_pred, classes, filters, maps)
    return run.finish(
        metric="test_accuracy",
        value=float((y_pred == y_test).mean()),
        higher_is_better=True,
        model=cfg.model,
        dataset=cfg.image_dir or cfg.dataset,
        train_accuracy=history["train_accuracy"][-1] if history["epoch"] else None,
        test_loss=cross_entropy(logits, y_test),
        epochs=epochs,
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
