"""Train a NumPy MLP: `python train.py` fits the three-armed spiral in a few seconds.

    python train.py                                   # spiral, 2-64-64-3, Adam
    python train.py --dataset moons --hidden 0        # a single neuron: logistic regression
    python train.py --dataset xor --hidden 8 --activation tanh   # 2 -> n_h -> 1
    python train.py --dataset digits                  # 8x8 digits, 64 features
    python train.py --dataset mnist --data-dir DATA   # DATA holds MNIST/ in torchvision's layout
    python train.py --resume                          # continue runs/latest where it stopped

The run folder gets model.npz (weights, optimizer state, config, the training path for
visualize.py), metrics.json, log.jsonl, loss.png and, for 2-D data, boundary.png and
boundary.gif.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

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

HERE = Path(__file__).parent
TOY = ("xor", "moons", "circles", "spiral", "swiss_roll", "four_clusters")
DATASETS = (*TOY, "curve", "digits", "mnist", "fashion-mnist")
CHECKPOINT = "model.npz"
# flags that decide the data, the network, the optimizer's state and the order of the random
# draws: a resumed run must keep them (the learning rate, say, may change)
MUST_MATCH = ("dataset", "n_samples", "hidden", "activation", "init", "dropout", "batchnorm")
MUST_MATCH += ("optimizer", "schedule", "batch_size", "seed")


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
                path_points=0,
                threads=2,
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
    path_points: int = arg(
        30,
        "weight snapshots kept for visualize.py's training path (plus the initial weights)",
        min=0,
    )
    threads: int = arg(1, "BLAS threads; 1 is fastest for the small toy networks", min=1)

    def check(self):
        if any(h < 0 for h in self.hidden) or (0 in self.hidden and len(self.hidden) > 1):
            raise UserError("--hidden takes positive sizes, or a single 0 for no hidden layer")
        if self.device not in ("auto", "cpu"):
            raise UserError(
                f"this NumPy project runs on the CPU; --device {self.device} is not cpu"
            )


def dry_run_config(cfg: TrainConfig) -> TrainConfig:
    """A tiny version of the run: 200 points, 8 hidden units, 4 epochs, checkpoints at 2 and 4."""
    return dataclasses.replace(
        cfg,
        n_samples=min(cfg.n_samples, 200),
        hidden=(8,),
        epochs=min(cfg.epochs, 4),
        checkpoint_every=min(cfg.checkpoint_every, 2),
        gif_frames=min(cfg.gif_frames, 3),
        path_points=min(cfg.path_points, 4),
    )


def must_match(cfg: TrainConfig) -> tuple[str, ...]:
    """MUST_MATCH, and --epochs too when the schedule depends on the length of the run."""
    return MUST_MATCH if cfg.schedule == "constant" else (*MUST_MATCH, "epochs")


# ----------------------------------------------------------------------------- data


def make_curve(n: int, seed: int):
    """A 1-D regression problem: t = sin(2x) + 0.3 x + noise, x in [-3, 3]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, size=(n, 1))
    t = np.sin(2 * x) + 0.3 * x + 0.1 * rng.standard_normal((n, 1))
    return x, t


class Data(NamedTuple):
    X_train: np.ndarray  # (N, D) float64 rows
    y_train: np.ndarray  # (N,) class indices, or (N, 1) targets for regression
    X_test: np.ndarray
    y_test: np.ndarray
    task: str  # "binary", "multiclass" or "regression"
    n_out: int  # outputs of the network: 1 logit, C logits, or 1 value


def load_dataset(cfg: TrainConfig) -> Data:
    """The train and test split of cfg.dataset (toy sets: 80/20 of n_samples points)."""
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
    if cfg.dry_run:
        X_train, y_train, X_test, y_test = X_train[:200], y_train[:200], X_test[:50], y_test[:50]
    if cfg.dataset == "curve":
        return Data(X_train, y_train, X_test, y_test, "regression", 1)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if n_classes == 2:
        return Data(X_train, y_train, X_test, y_test, "binary", 1)
    return Data(X_train, y_train, X_test, y_test, "multiclass", n_classes)


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


def train_epoch(model, loss_fn, optimizer, loader, after_backward=None) -> float:
    """One pass over the training set: forward, loss, backward, step. Returns the mean loss.

    `after_backward(model)` sees every layer's gradients before the step (visualize.py records
    the gradient flow with it).
    """
    model.train()
    total = 0.0
    for xb, yb in loader:
        out = model.forward(xb)  # (B, n_out)
        loss, dout = loss_fn(out, yb)  # dout = dL/d(out)
        model.backward(dout)  # every layer's dW, db
        if after_backward is not None:
            after_backward(model)
        optimizer.step()
        total += loss * len(xb)
    return total / len(loader.X)


def fit(model, loss_fn, optimizer, loader, epochs: int, schedule: str = "constant") -> list:
    """`epochs` passes with the learning rate on `schedule`; one record per epoch."""
    base_lr = optimizer.lr
    history = []
    for epoch in range(epochs):
        optimizer.lr = base_lr * lr_factor(schedule, epoch, epochs)
        loss = train_epoch(model, loss_fn, optimizer, loader)
        history.append({"epoch": epoch + 1, "lr": optimizer.lr, "train_loss": loss})
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


def load_model(path, dtype=np.float64):
    """(model, checkpoint) from a checkpoint alone; CheckpointError when it does not fit.

    The checkpoint (shared.state's .npz) holds `model`, `model_config`, `task` and the run's
    `train_config`, so the network is rebuilt from the file itself.
    """
    from shared.state import read_state

    ckpt = read_state(path, required=("model", "model_config", "task"))
    saved = ckpt["model_config"]
    mcfg = ModelConfig(**{**saved, "hidden": tuple(saved["hidden"])})
    model = build_mlp(mcfg, np.random.default_rng(0), dtype)
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit its model config ({err})") from None
    return model, ckpt


def saved_config(ckpt: dict) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with, to rebuild its data."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in ckpt["train_config"].items() if k in names}
    return TrainConfig(**{**saved, "hidden": tuple(saved["hidden"]), "resume": False})


@dataclass
class Trace:
    """What a run gathers epoch by epoch besides its weights. It is saved in every checkpoint,
    so a resumed run draws the same loss curve, animation and training path as one that never
    stopped."""

    history: list = field(default_factory=list)  # one record per epoch, as logged
    frames: list = field(default_factory=list)  # (120, 120, 3) uint8 decision-region images
    path_weights: list = field(default_factory=list)  # (P,) flat parameters at path_epochs
    path_epochs: list = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, extra: dict) -> Trace:
        return cls(**{f.name: list(extra.get(f.name, [])) for f in dataclasses.fields(cls)})

    def snapshot(self, epoch: int, model) -> None:
        self.path_weights.append(model.flat_parameters())
        self.path_epochs.append(epoch)


def spread(n: int, epochs: int) -> set[int]:
    """n epochs spread evenly over 1..epochs (fewer when there are fewer epochs)."""
    return set(np.linspace(1, epochs, n).round().astype(int).tolist()) if n else set()


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


def model_config(cfg: TrainConfig, data: Data) -> ModelConfig:
    return ModelConfig(
        n_in=data.X_train.shape[1],  # 2 for the toy sets, 64 for digits, 784 for MNIST
        hidden=() if cfg.hidden == (0,) else cfg.hidden,
        n_out=data.n_out,
        activation=cfg.activation,
        init=cfg.init,
        dropout=cfg.dropout,
        batchnorm=cfg.batchnorm,
    )


def main(cfg: TrainConfig) -> dict:
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    if cfg.dry_run:
        cfg = dry_run_config(cfg)
    with threadpool_limits(cfg.threads):  # NumPy's BLAS
        return train(cfg)


def train(cfg: TrainConfig) -> dict:
    from boundary import boundary_frame, plot_extent

    from shared.logging import progress, start_run
    from shared.runtime import seed_everything
    from shared.state import TrainingState, load_for_resume

    ckpt = load_for_resume(cfg, HERE, CHECKPOINT, must_match=must_match(cfg))  # None: fresh
    run = start_run(f"mlp {cfg.dataset}", cfg, HERE)
    rng = seed_everything(cfg.seed)  # draws the initial weights, then shuffles, dropout masks

    # 1. data, model, loss, optimizer
    data = load_dataset(cfg)
    loader = DataLoader(data.X_train, data.y_train, cfg.batch_size, rng)
    mcfg = model_config(cfg, data)
    check_memory(mcfg, cfg.batch_size)
    model = build_mlp(mcfg, rng)
    loss_fn = LOSSES[data.task]()
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    n_params = sum(p.size for p, _ in model.parameters())
    sizes = " -> ".join(map(str, [mcfg.n_in, *mcfg.hidden, mcfg.n_out]))
    n_train, n_test = len(data.X_train), len(data.X_test)
    print(f"{cfg.dataset}: {n_train} train, {n_test} test; {sizes} ({n_params} params)")

    # 2. everything the next epoch depends on: weights and batch-norm statistics, the
    # optimizer's moments and step count, the generator of shuffles and dropout masks
    state = TrainingState(
        run.path / CHECKPOINT, cfg, log_key="epoch", model=model, optimizer=optimizer, generator=rng
    )
    start = state.restore(ckpt)  # 0 when not resuming
    trace = Trace.from_checkpoint(state.extra)
    if ckpt is not None:
        print(f"resumed from {ckpt['path']} at epoch {start}")
    elif cfg.path_points:
        trace.snapshot(0, model)  # the training path starts at the initial weights
    two_d = data.X_train.shape[1] == 2 and data.task != "regression"
    extent = plot_extent(data.X_train) if two_d else None
    frame_epochs = spread(cfg.gif_frames, cfg.epochs) if two_d else set()
    path_epochs = spread(cfg.path_points, cfg.epochs)

    # 3. train: one pass over the data per epoch, then evaluate, log, and save
    bar = progress(range(start + 1, cfg.epochs + 1), desc="epochs", total=cfg.epochs, initial=start)
    for epoch in bar:
        optimizer.lr = cfg.lr * lr_factor(cfg.schedule, epoch - 1, cfg.epochs)
        train_loss = train_epoch(model, loss_fn, optimizer, loader)
        test = evaluate(model, loss_fn, data.X_test, data.y_test, data.task)
        record = {"epoch": epoch, "lr": optimizer.lr, "train_loss": train_loss}
        record.update({f"test_{k}": v for k, v in test.items()})
        run.log(**record)  # log, then save: a run killed in between repeats this epoch
        trace.history.append(record)
        bar.set_postfix(train=f"{train_loss:.4f}", test=f"{record['test_loss']:.4f}")
        if epoch in frame_epochs:
            trace.frames.append(
                boundary_frame(model, data.task, data.X_train, data.y_train, extent)
            )
        if epoch in path_epochs:
            trace.snapshot(epoch, model)
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
            extras = dict(model_config=dataclasses.asdict(mcfg), task=data.task, **vars(trace))
            state.save(epoch, **extras)  # atomic: a kill mid-save leaves the last one whole

    return finish(run, cfg, data, model, loss_fn, trace, sizes)


def finish(run, cfg: TrainConfig, data: Data, model, loss_fn, trace: Trace, sizes: str) -> dict:
    """The final numbers, loss.png, the boundary figures, and metrics.json."""
    from boundary import plot_boundary

    from shared.plots import plot_curves, save_gif

    train_eval = evaluate(model, loss_fn, data.X_train, data.y_train, data.task)
    test_eval = evaluate(model, loss_fn, data.X_test, data.y_test, data.task)
    epochs = [r["epoch"] for r in trace.history]
    curves = {
        "train": (epochs, [r["train_loss"] for r in trace.history]),
        "test": (epochs, [r["test_loss"] for r in trace.history]),
    }
    title = f"{cfg.dataset}, {sizes}, {cfg.optimizer}"
    plot_curves(run.path / "loss.png", curves, "epoch", "loss", title, logy=True)
    if data.X_train.shape[1] == 2 and data.task != "regression":
        plot_boundary(
            run.path / "boundary.png", model, data.task, data.X_train, data.y_train, cfg.dataset
        )
        if trace.frames:
            save_gif(run.path / "boundary.gif", trace.frames, duration_ms=120, scale=2)
    if data.task == "regression":
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
