"""Train a NumPy MLP: `python train.py` fits the three-armed spiral in a few seconds.

    python train.py                                   # spiral, 2-64-64-3, Adam
    python train.py --dataset moons --hidden 0        # a single neuron: logistic regression
    python train.py --dataset xor --hidden 8 --activation tanh   # 2 -> n_h -> 1
    python train.py --dataset digits                  # 8x8 digits, 64 features
    python train.py --dataset mnist --data-dir DATA   # DATA holds MNIST/ in torchvision's layout

The run folder gets model.npz (weights, optimizer state, config), metrics.json, log.jsonl,
loss.png and, for 2-D data, boundary.png and boundary.gif.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from model import (
    ACTIVATIONS,
    INITS,
    BCEWithLogitsLoss,
    ModelConfig,
    MSELoss,
    SoftmaxCrossEntropy,
    build_mlp,
    predict,
)
from optim import OPTIMIZERS, SCHEDULES, lr_factor, make_optimizer

from shared.cli import Preset, RunConfig, arg, cli_main
from shared.errors import CheckpointError, UserError

TOY = ("xor", "moons", "circles", "spiral", "swiss_roll", "four_clusters")
DATASETS = (*TOY, "curve", "digits", "mnist", "fashion-mnist")
CHECKPOINT = "model.npz"


@dataclass
class TrainConfig(RunConfig):
    PRESETS = {
        "mnist": Preset(
            "MNIST, a 784-800-10 NumPy MLP with dropout, Adam and a cosine schedule",
            dict(
                dataset="mnist",
                hidden=(800,),
                dropout=0.2,
                optimizer="adam",
                lr=1e-3,
                schedule="cosine",
                epochs=20,
                batch_size=128,
                gif_frames=0,
            ),
            anchor="a 784-800-10 MLP: 98.4% test accuracy (LeCun et al.'s MNIST table)",
        )
    }
    dataset: str = arg("spiral", "training data", choices=DATASETS)
    n_samples: int = arg(1500, "points generated for a toy dataset (80%% train, 20%% test)", min=10)
    hidden: tuple[int, ...] = arg((64, 64), "hidden layer sizes; 0 for none (a single neuron)")
    activation: str = arg("relu", "hidden activation", choices=tuple(ACTIVATIONS))
    init: str = arg("he", "weight initialisation", choices=INITS)
    optimizer: str = arg("adam", "update rule", choices=OPTIMIZERS)
    lr: float = arg(0.005, "learning rate", min=0, min_inclusive=False)
    schedule: str = arg("cosine", "learning-rate schedule", choices=SCHEDULES)
    epochs: int = arg(30, "passes over the training set", min=1)
    batch_size: int = arg(32, "examples per step", min=1)
    weight_decay: float = arg(0.0, "L2 penalty (decoupled for adamw)", min=0)
    dropout: float = arg(0.0, "drop probability after each hidden activation", min=0, max=0.95)
    batchnorm: bool = arg(False, "batch normalisation after each hidden Dense")
    checkpoint_every: int = arg(10, "save a resumable checkpoint every N epochs", min=1)
    gif_frames: int = arg(30, "frames of the boundary animation (2-D data only)", min=0)

    def check(self):
        if any(h < 0 for h in self.hidden) or (0 in self.hidden and len(self.hidden) > 1):
            raise UserError("--hidden takes positive sizes, or a single 0 for no hidden layer")
        if self.device not in ("auto", "cpu"):
            raise UserError(
                f"this NumPy project runs on the CPU; --device {self.device} is not cpu"
            )


# ----------------------------------------------------------------------------- data


def make_curve(n: int, seed: int):
    """A 1-D regression problem: t = sin(2x) + 0.3 x + noise, x in [-3, 3]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, size=(n, 1))
    t = np.sin(2 * x) + 0.3 * x + 0.1 * rng.standard_normal((n, 1))
    return x, t


def load_dataset(cfg: TrainConfig):
    """(X_train, y_train, X_test, y_test, task, n_out); features are float64 rows."""
    from shared.data import load_images, make_toy

    if cfg.dataset in TOY or cfg.dataset == "curve":
        if cfg.dataset == "curve":
            X, y = make_curve(cfg.n_samples, cfg.seed)
        else:
            X, y = make_toy(cfg.dataset, n=cfg.n_samples, seed=cfg.seed)  # already shuffled
        n_train = int(0.8 * len(X))
        X_train, y_train, X_test, y_test = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    else:
        x_train, y_train = load_images(cfg.dataset, "train", data_dir=cfg.data_dir, seed=cfg.seed)
        x_test, y_test = load_images(cfg.dataset, "test", data_dir=cfg.data_dir, seed=cfg.seed)
        X_train = x_train.reshape(len(x_train), -1).astype(np.float64)  # (N, C*H*W)
        X_test = x_test.reshape(len(x_test), -1).astype(np.float64)
    if cfg.dataset == "curve":
        return X_train, y_train, X_test, y_test, "regression", 1
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if n_classes == 2:
        return X_train, y_train, X_test, y_test, "binary", 1
    return X_train, y_train, X_test, y_test, "multiclass", n_classes


LOSSES = {"binary": BCEWithLogitsLoss, "multiclass": SoftmaxCrossEntropy, "regression": MSELoss}


class DataLoader:
    """Mini-batches of (x, y), reshuffled every epoch with the given generator.

    A last batch of a single sample joins the one before it: batch normalisation cannot
    normalise one sample (1,200 samples in batches of 11 give 109 batches, the last of 12).
    """

    def __init__(self, X, y, batch_size: int, rng: np.random.Generator, shuffle: bool = True):
        self.X, self.y, self.batch_size, self.rng, self.shuffle = X, y, batch_size, rng, shuffle

    def starts(self) -> list[int]:
        starts = list(range(0, len(self.X), self.batch_size))
        if len(starts) > 1 and len(self.X) - starts[-1] == 1:
            starts.pop()
        return starts

    def __len__(self):
        return len(self.starts())

    def __iter__(self):
        order = self.rng.permutation(len(self.X)) if self.shuffle else np.arange(len(self.X))
        starts = self.starts()
        for start, end in zip(starts, [*starts[1:], len(order)]):
            idx = order[start:end]
            yield self.X[idx], self.y[idx]


def fit(model, loss_fn, optimizer, loader, epochs, schedule="constant", start=0, on_epoch=None):
    """The training loop: forward, loss, backward, step. Returns one record per epoch.

    `on_epoch(epoch, record)` runs after each epoch (evaluation, logging, checkpoints) and may
    add entries to the record.
    """
    from shared.logging import progress

    base_lr = optimizer.lr
    history = []
    for epoch in progress(range(start, epochs), desc="epochs", total=epochs, initial=start):
        optimizer.lr = base_lr * lr_factor(schedule, epoch, epochs)
        model.train()
        total = 0.0
        for xb, yb in loader:
            out = model.forward(xb)  # (B, n_out)
            loss, dout = loss_fn(out, yb)  # dout = dL/d(out)
            model.backward(dout)  # every layer's dW, db
            optimizer.step()
            total += loss * len(xb)
        record = {"epoch": epoch + 1, "lr": optimizer.lr, "train_loss": total / len(loader.X)}
        if on_epoch is not None:
            on_epoch(epoch + 1, record)
        history.append(record)
    optimizer.lr = base_lr
    return history


def evaluate(model, loss_fn, X, y, task: str) -> dict:
    """Loss and (for classification) accuracy of the model in evaluation mode."""
    model.eval()
    loss, _ = loss_fn(model.forward(X), y)
    if task == "regression":
        return {"loss": loss}
    accuracy = float((predict(model, X, task).argmax(axis=1) == y).mean())
    return {"loss": loss, "accuracy": accuracy}


# ----------------------------------------------------------------------------- checkpoints


def save_model(path, model, optimizer, meta: dict) -> None:
    from shared.checkpoint import save_arrays

    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    save_arrays(path, arrays, meta)


def load_model(path, dtype=np.float64):
    """(model, arrays, meta) from a checkpoint alone; CheckpointError when it does not fit."""
    from shared.checkpoint import load_arrays

    arrays, meta = load_arrays(path, required=("optim.t",))
    if "model_config" not in meta or "task" not in meta:
        raise CheckpointError(f"checkpoint {path} is not an mlp checkpoint (no model config)")
    mcfg = ModelConfig(**{**meta["model_config"], "hidden": tuple(meta["model_config"]["hidden"])})
    model = build_mlp(mcfg, np.random.default_rng(0), dtype)
    state = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit its model config ({err})") from None
    return model, arrays, meta


# ----------------------------------------------------------------------------- main


def check_memory(mcfg: ModelConfig, batch_size: int) -> None:
    """Stop before allocating a network that cannot fit: each weight is stored with its
    gradient and up to two optimizer moments, each activation with its gradient (float64)."""
    from shared.runtime import check_fits_in_memory

    sizes = [mcfg.n_in, *mcfg.hidden, mcfg.n_out]
    weights = sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))
    activations = batch_size * sum(sizes) * 4  # pre- and post-activation, and their gradients
    flags = "--hidden " + " ".join(map(str, mcfg.hidden or (0,)))
    check_fits_in_memory(8 * (4 * weights + activations), flags)


def main(cfg: TrainConfig) -> dict:
    from boundary import boundary_frame, plot_boundary, plot_extent

    from shared.logging import start_run
    from shared.plots import plot_curves, save_gif
    from shared.runtime import seed_everything

    if cfg.dry_run:
        cfg = dataclasses.replace(
            cfg,
            n_samples=min(cfg.n_samples, 200),
            hidden=(8,),
            epochs=min(cfg.epochs, 3),
            gif_frames=min(cfg.gif_frames, 3),
        )
    run = start_run(f"mlp {cfg.dataset}", cfg, Path(__file__).parent)
    rng = seed_everything(cfg.seed)

    # 1. data
    X_train, y_train, X_test, y_test, task, n_out = load_dataset(cfg)
    if cfg.dry_run:
        X_train, y_train, X_test, y_test = X_train[:200], y_train[:200], X_test[:50], y_test[:50]
    loader = DataLoader(X_train, y_train, cfg.batch_size, rng)

    # 2. model, loss, optimizer
    hidden = () if cfg.hidden == (0,) else cfg.hidden
    mcfg = ModelConfig(
        n_in=X_train.shape[1],  # 2 for the toy sets, 64 for digits, 784 for MNIST
        hidden=hidden,
        n_out=n_out,
        activation=cfg.activation,
        init=cfg.init,
        dropout=cfg.dropout,
        batchnorm=cfg.batchnorm,
    )
    check_memory(mcfg, cfg.batch_size)
    model = build_mlp(mcfg, rng)
    loss_fn = LOSSES[task]()
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    n_params = sum(p.size for p, _ in model.parameters())
    sizes = " -> ".join(map(str, [mcfg.n_in, *hidden, n_out]))
    print(f"{cfg.dataset}: {len(X_train)} train, {len(X_test)} test; {sizes} ({n_params} params)")

    # 3. resume from the last periodic checkpoint
    history, start = [], 0
    checkpoint = run.path / CHECKPOINT
    if cfg.resume and checkpoint.exists():
        saved, arrays, saved_meta = load_model(checkpoint)
        try:
            model.load_state_dict(saved.state_dict())
        except (KeyError, ValueError):
            raise CheckpointError(
                f"checkpoint {checkpoint} holds another network ({saved_meta['model_config']}); "
                "resume with the flags it was trained with"
            ) from None
        optimizer.load_state_dict(
            {k[len("optim.") :]: v for k, v in arrays.items() if k.startswith("optim.")}
        )
        rng.bit_generator.state = saved_meta["rng_state"]  # same shuffles and dropout masks
        history, start = saved_meta["history"], saved_meta["epoch"]
        print(f"resumed from {checkpoint} at epoch {start}")

    two_d = X_train.shape[1] == 2 and task != "regression"
    extent = plot_extent(X_train) if two_d else None
    frames = []
    frame_epochs = set(np.linspace(1, cfg.epochs, cfg.gif_frames).round().astype(int).tolist())

    def checkpoint_meta(epoch):  # everything but the arrays; JSON inside the .npz
        return {
            "config": dataclasses.asdict(cfg),
            "model_config": dataclasses.asdict(mcfg),
            "task": task,
            "epoch": epoch,
            "history": history,
            "rng_state": rng.bit_generator.state,
        }

    def on_epoch(epoch, record):
        record.update(
            {f"test_{k}": v for k, v in evaluate(model, loss_fn, X_test, y_test, task).items()}
        )
        run.log(**record)
        history.append(record)
        if two_d and epoch in frame_epochs:
            frames.append(boundary_frame(model, task, X_train, y_train, extent))
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
            save_model(checkpoint, model, optimizer, checkpoint_meta(epoch))

    # 4. train
    fit(model, loss_fn, optimizer, loader, cfg.epochs, cfg.schedule, start, on_epoch)

    # 5. final numbers, figures
    train_eval = evaluate(model, loss_fn, X_train, y_train, task)
    test_eval = evaluate(model, loss_fn, X_test, y_test, task)
    epochs = [r["epoch"] for r in history]
    plot_curves(
        run.path / "loss.png",
        {
            "train": (epochs, [r["train_loss"] for r in history]),
            "test": (epochs, [r["test_loss"] for r in history]),
        },
        xlabel="epoch",
        ylabel="loss",
        logy=True,
        title=f"{cfg.dataset}, {sizes}, {cfg.optimizer}",
    )
    if two_d:
        plot_boundary(run.path / "boundary.png", model, task, X_train, y_train, f"{cfg.dataset}")
        if frames:
            save_gif(run.path / "boundary.gif", frames, duration_ms=120, scale=2)
    if task == "regression":
        return run.finish(
            metric="test_mse",
            value=test_eval["loss"],
            higher_is_better=False,
            train_mse=train_eval["loss"],
        )
    return run.finish(
        metric="test_accuracy",
        value=test_eval["accuracy"],
        higher_is_better=True,
        train_accuracy=train_eval["accuracy"],
        test_loss=test_eval["loss"],
    )


if __name__ == "__main__":
    cli_main(main, TrainConfig)
