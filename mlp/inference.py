"""Predict with a trained MLP: classes and probabilities (or values, for regression).

    python inference.py                         # a few test points of the training dataset
    python inference.py 0.5 -0.2  0.1 0.3       # two 2-D points (numbers, n_features per point)
    python inference.py --csv points.csv        # one point per line, comma-separated
    python inference.py --boundary boundary.png # redraw the decision boundary (2-D data)

The checkpoint defaults to runs/latest/model.npz; it holds the config, so nothing else is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.cli import arg, cli_main
from shared.errors import DataError, UserError

PROJECT = Path(__file__).parent


@dataclass
class InferenceConfig:
    values: tuple[float, ...] = arg((), "feature values, n_features per point", positional=True)
    checkpoint: str = arg("", "model.npz to load (default: runs/latest/model.npz)")
    csv: str = arg("", "CSV file of points, one per line, comma-separated features")
    boundary: str = arg("", "write the decision boundary over the training data to this PNG")
    show: int = arg(5, "test points shown when no points are given", min=1)
    threads: int = arg(1, "BLAS threads, as in train.py (1 is fastest for these small networks)",
                       min=1)  # fmt: skip


def read_csv(path: str, n_features: int) -> np.ndarray:
    if not Path(path).is_file():
        raise DataError(f"CSV file {path} does not exist (or is not a file)")
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        rows = np.loadtxt(lines, delimiter=",", ndmin=2, dtype=np.float64) if lines else None
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"CSV file {path} must hold only numbers ({err})") from None
    if rows is None or rows.size == 0:
        raise DataError(f"CSV file {path} holds no points")
    if rows.shape[1] != n_features:
        raise DataError(
            f"CSV file {path} has {rows.shape[1]} columns; the model takes {n_features}"
        )
    return rows


def main(cfg: InferenceConfig) -> None:
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    with threadpool_limits(cfg.threads):  # NumPy's BLAS
        predict_and_show(cfg)


def predict_and_show(cfg: InferenceConfig) -> None:
    from model import predict
    from train import CHECKPOINT, load_dataset, load_model, saved_config

    from shared.logging import default_checkpoint

    path = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint(PROJECT, CHECKPOINT)
    model, ckpt = load_model(path)
    model.eval()
    task, n_features = ckpt["task"], model.layers[0].W.shape[0]
    train_cfg = saved_config(ckpt)
    print(f"loaded {path}: {train_cfg.dataset}, {task}, {n_features} features")

    labels = None
    if cfg.values and cfg.csv:
        raise UserError("give points on the command line or with --csv, not both")
    if cfg.values:
        if len(cfg.values) % n_features:
            raise UserError(
                f"got {len(cfg.values)} numbers; the model takes {n_features} per point"
            )
        X = np.array(cfg.values).reshape(-1, n_features)
    elif cfg.csv:
        X = read_csv(cfg.csv, n_features)
    else:
        _, _, X_test, y_test, _, _ = load_dataset(train_cfg)
        X, labels = X_test[: cfg.show], y_test[: cfg.show]

    out = predict(model, X, task)
    for i, x in enumerate(X):
        point = " ".join(f"{v:.3g}" for v in x) if n_features <= 8 else f"({n_features} values)"
        if task == "regression":
            line = f"{point} -> {out[i, 0]:.4f}"
        else:
            probs = " ".join(f"{p:.3f}" for p in out[i])
            line = f"{point} -> class {out[i].argmax()} (p = {probs})"
        if labels is not None:
            line += f"  [true: {np.ravel(labels[i])[0]:.4g}]"
        print(line)

    if cfg.boundary:
        from boundary import plot_boundary

        if n_features != 2 or task == "regression":
            raise UserError("--boundary needs a classifier of 2-D points")
        X_train, y_train, _, _, _, _ = load_dataset(train_cfg)
        plot_boundary(cfg.boundary, model, task, X_train, y_train, train_cfg.dataset)
        print(f"wrote {cfg.boundary}")


if __name__ == "__main__":
    cli_main(main, InferenceConfig)
