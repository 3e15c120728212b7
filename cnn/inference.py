"""Classify pictures with a trained checkpoint: top-k classes with their probabilities.

    python inference.py                          # the first test images of the last run
    python inference.py --write-examples digits/ # a few test digits as PNG files to try
    python inference.py digits/*.png --top-k 3
    python inference.py --index 17

Files are converted to the checkpoint's channels and resized to its input side, then
standardised with the training set's statistics, exactly as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from data import load_dataset, read_image, standardise

from shared.checkpoint import load_model_state
from shared.cli import arg, cli_main
from shared.data import load_images, resize_images
from shared.errors import CheckpointError, UserError
from shared.logging import latest_run
from shared.plots import save_image
from shared.runtime import set_threads
from shared.state import read_state

PROJECT_DIR = Path(__file__).parent
REQUIRED = ("model", "model_config", "train_config", "classes", "mean", "std")


@dataclass
class InferenceConfig:
    images: list[str] = arg([], "PNG/JPEG files to classify", positional=True)
    checkpoint: str = arg("", "model.npz or model.pt (default: runs/latest/model.npz or .pt)")
    index: int = arg(-1, "classify this test-set image instead (-1: none)", min=-1)
    top_k: int = arg(3, "how many classes to show per image", min=1)
    write_examples: str = arg("", "write one test digit per class as PNG into this folder, exit")
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps (PyTorch checkpoints)")
    data_dir: str = arg("", "where datasets live, for --index on real data")
    threads: int = arg(1, "BLAS/torch threads (small matrices run best on one)", min=1)


def write_examples(folder: str) -> None:
    """One 32x32 PNG per digit class from the digits test split (never seen in training)."""
    x, y = load_images("digits", "test")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        first = int(np.flatnonzero(y == digit)[0])
        path = folder / f"digit_{digit}.png"
        save_image(path, resize_images(x[first, 0], 32))
        print(path)


def load_classifier(path: Path, device_name: str):
    """(predict_logits, ckpt): a function (N, C, H, W) -> (N, classes), rebuilt from the file."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist (train first: python train.py)")
    ckpt = read_state(path, required=REQUIRED)
    if path.suffix == ".npz":
        from numpy_cnn import NumpyCNN, NumpyCNNConfig

        model_cfg = NumpyCNNConfig(**ckpt["model_config"])
        model_cfg.channels = tuple(model_cfg.channels)
        model = NumpyCNN(model_cfg)
        try:
            model.load_state_dict(ckpt["model"])
        except ValueError as err:
            raise CheckpointError(f"checkpoint {path} does not fit the model: {err}") from None
        return model.predict_logits, ckpt

    from model import ModelConfig, build_model, predict_logits

    from shared.runtime import get_device

    model = build_model(ModelConfig(**ckpt["model_config"])).to(get_device(device_name))
    load_model_state(model, ckpt["model"], path)
    return (lambda x: predict_logits(model, x)), ckpt


def find_checkpoint(given: str) -> Path:
    if given:
        return Path(given)
    run = latest_run(PROJECT_DIR)
    for name in ("model.npz", "model.pt"):
        if (run / name).exists():
            return run / name
    raise CheckpointError(f"no model.npz or model.pt in {run} (train first: python train.py)")


def main(cfg: InferenceConfig) -> list[dict]:
    if cfg.write_examples:
        write_examples(cfg.write_examples)
        return []
    if cfg.images and cfg.index >= 0:
        raise UserError("give image files or --index, not both")
    path = find_checkpoint(cfg.checkpoint)
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    threadpool_limits(cfg.threads)  # NumPy's BLAS
    if path.suffix == ".pt":
        set_threads(cfg.threads)  # torch's own pool
    predict_logits, meta = load_classifier(path, cfg.device)
    train_cfg, classes = meta["train_config"], meta["classes"]
    model_cfg = meta["model_config"]
    channels, size = model_cfg["in_channels"], model_cfg["image_size"]

    if cfg.images:
        names = cfg.images
        x = np.stack([read_image(p, channels, size) for p in cfg.images])
    else:
        _, _, x_test, y_test, _ = load_dataset(
            train_cfg["dataset"],
            train_cfg["image_dir"],
            cfg.data_dir or train_cfg["data_dir"],
            size,
            train_cfg["seed"],
        )
        chosen = [cfg.index] if cfg.index >= 0 else list(range(min(5, len(x_test))))
        if chosen[-1] >= len(x_test):
            raise UserError(f"--index {cfg.index} is out of range: the test set has {len(x_test)}")
        names = [f"test image {i} (true: {classes[y_test[i]]})" for i in chosen]
        x = x_test[chosen]

    logits = predict_logits(standardise(x, meta["mean"], meta["std"]))  # (N, classes)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    results = []
    for name, p in zip(names, probs):
        top = np.argsort(-p)[: cfg.top_k]
        shown = ", ".join(f"{classes[k]} {p[k]:.3f}" for k in top)
        print(f"{name}: {shown}")
        results.append({"input": str(name), "top": [(classes[k], float(p[k])) for k in top]})
    return results


if __name__ == "__main__":
    cli_main(main, InferenceConfig)
