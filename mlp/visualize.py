"""Pictures of the network and of how it learns, computed with mlp's own layers.

    python visualize.py                          # the four figures of runs/latest, in figures/
    python visualize.py --checkpoint runs/<time>/model.npz --out my_figures

network.png        the trained network as a graph: a column of units per layer, each edge
                   coloured by its trained weight
activations.png    every activation function beside its derivative (its layer's backward pass)
landscape.png      the training loss around the trained weights along two filter-normalised
                   random directions (Li et al., 2018), and along the two principal directions
                   of the training path, with the path (the weights saved during training,
                   --path-points of train.py) projected onto each plane
gradient_flow.png  the mean |dL/dW| of every layer while a deep network trains: sigmoid, ReLU,
                   ReLU with batch normalisation (this one trains its own networks on the spiral)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from model import (
    ACTIVATIONS,
    BatchNorm1d,
    Dense,
    Dropout,
    LeakyReLU,
    ModelConfig,
    SoftmaxCrossEntropy,
    build_mlp,
)

from shared.cli import arg, cli_main
from shared.errors import UserError

HERE = Path(__file__).parent
OUTPUT = {"binary": "sigmoid", "multiclass": "softmax", "regression": "identity"}
# the three networks of the gradient-flow figure: (title, activation, init, batch norm)
FLOW_SETTINGS = (
    ("sigmoid", "sigmoid", "xavier", False),
    ("ReLU", "relu", "he", False),
    ("ReLU + batch norm", "relu", "he", True),
)


@dataclass
class VisualizeConfig:
    checkpoint: str = arg("", "model.npz of a run (default: runs/latest/model.npz)")
    out: str = arg("figures", "folder for the PNGs")
    grid: int = arg(
        31, "points per axis of each loss landscape (odd: the centre is a point)", min=3
    )
    span: float = arg(
        1.0,
        "the random-direction landscape covers [-span, span] on both axes",
        min=0,
        min_inclusive=False,
    )
    landscape_samples: int = arg(2000, "training examples each landscape loss is taken over", min=1)
    flow_depth: int = arg(6, "hidden layers of the gradient-flow networks", min=1)
    flow_width: int = arg(32, "units per hidden layer of the gradient-flow networks", min=1)
    flow_epochs: int = arg(10, "epochs each gradient-flow network trains on the spiral", min=1)
    flow_samples: int = arg(1200, "spiral points the gradient-flow networks train on", min=10)
    seed: int = arg(0, "seed of the random directions and of the gradient-flow networks", min=0)
    threads: int = arg(1, "BLAS threads; 1 is fastest for these small networks", min=1)

    def check(self):
        if self.grid % 2 == 0:
            raise UserError(
                f"--grid must be odd, so that the trained weights are a grid point; got {self.grid}"
            )


# ----------------------------------------------------------------------------- the network


def network_layout(model, task: str) -> list[tuple[int, str]]:
    """(units, caption) per column of the graph: the input, then one column per Dense layer,
    captioned with the layers that follow it (batch norm, activation, dropout)."""
    columns = [(model.layers[0].W.shape[0], "input")]
    for layer in model.layers:
        if isinstance(layer, Dense):
            columns.append((layer.W.shape[1], "Dense"))
            continue
        if isinstance(layer, BatchNorm1d):
            name = "BatchNorm"
        elif isinstance(layer, Dropout):
            name = f"Dropout({layer.p:g})"
        elif isinstance(layer, LeakyReLU):
            name = f"LeakyReLU({layer.slope:g})"
        else:
            name = type(layer).__name__  # ReLU, Tanh, Sigmoid, GELU
        units, caption = columns[-1]
        columns[-1] = (units, f"{caption} → {name}")
    units, caption = columns[-1]
    columns[-1] = (units, f"{caption} → {OUTPUT[task]}")
    return columns


def shown_units(n: int, most: int = 12) -> list[int | None]:
    """Which units of a column to draw: all of them, or the first and last few with a gap
    (None) between."""
    if n <= most:
        return list(range(n))
    head = most // 2
    return [*range(head), None, *range(n - (most - head - 1), n)]


def plot_network(path, model, task: str, title: str = "") -> None:
    """A column of circles per layer; edges coloured by weight (red > 0, blue < 0), their
    opacity by |w| relative to the largest weight of the layer."""
    import matplotlib.pyplot as plt

    from shared.plots import save_figure

    columns = network_layout(model, task)
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    shown = [shown_units(n) for n, _ in columns]
    ys = [np.linspace(1, -1, len(s)) * min(1.0, len(s) / 12) for s in shown]
    fig, ax = plt.subplots(figsize=(2.2 * len(columns) + 1, 5.2))
    cmap = plt.get_cmap("coolwarm")
    for c, layer in enumerate(dense):
        W = layer.W  # (units of column c, units of column c + 1)
        scale = np.abs(W).max() or 1.0
        for i, y0 in zip(shown[c], ys[c]):
            for j, y1 in zip(shown[c + 1], ys[c + 1]):
                if i is None or j is None:
                    continue
                w = W[i, j] / scale  # in [-1, 1]
                ax.plot(
                    [c, c + 1],
                    [y0, y1],
                    color=cmap(0.5 + w / 2),
                    alpha=0.15 + 0.85 * abs(w),
                    lw=0.4 + 1.2 * abs(w),
                    zorder=1,
                )
    for c, ((n, caption), units) in enumerate(zip(columns, shown)):
        for unit, y in zip(units, ys[c]):
            if unit is None:
                ax.text(c, y, "⋮", ha="center", va="center", fontsize=14)
            else:
                ax.scatter([c], [y], s=120, color="white", edgecolor="black", zorder=2)
        ax.text(
            c,
            -1.2,
            f"{n} units\n" + caption.replace(" → ", "\n→ "),
            ha="center",
            va="top",
            fontsize=8,
        )
    ax.set_xlim(-0.5, len(columns) - 0.5)
    ax.set_ylim(-1.75, 1.15)
    ax.text(
        len(columns) / 2 - 0.5,
        -1.72,
        "edges: trained weights, red > 0, blue < 0, stronger = larger |w|",
        ha="center",
        fontsize=8,
        color="dimgrey",
    )
    ax.axis("off")
    ax.set_title(title or "the network")
    save_figure(fig, path)


# ----------------------------------------------------------------------------- activations


def activation_curves(x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """f(x) and f'(x) of every activation, from its layer's forward and backward passes:
    backward(1) is the elementwise derivative, since dL/dx = f'(x) dL/dy."""
    curves = {}
    for name, make in ACTIVATIONS.items():
        layer = make()
        y = layer.forward(x.copy())
        curves[name] = (y, layer.backward(np.ones_like(x)))
    return curves


def plot_activations(path, x: np.ndarray | None = None) -> None:
    import matplotlib.pyplot as plt

    from shared.plots import save_figure

    x = np.linspace(-4, 4, 801) if x is None else x
    curves = activation_curves(x)
    fig, axes = plt.subplots(
        1, len(curves), figsize=(3.2 * len(curves), 3), sharex=True, layout="constrained"
    )
    for ax, (name, (y, dy)) in zip(axes, curves.items()):
        ax.plot(x, y, label="f(x)")
        ax.plot(x, dy, label="f'(x)", ls="--")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    axes[0].legend()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- loss landscape


def filter_normalized_direction(model, rng: np.random.Generator) -> np.ndarray:
    """A random direction in parameter space, (P,) like `model.flat_parameters()`.

    Li et al. (2018): draw d ~ N(0, I), then rescale each filter of d to the norm of the same
    filter of the weights, d_ij <- d_ij / ||d_ij|| * ||theta_ij||, so that a step along d is
    as large, relative to each unit's weights, everywhere in the network (ReLU networks are
    invariant to scaling a unit's weights, which would otherwise distort the picture). In a
    Dense layer a filter is the column W[:, j], the weights into unit j. Biases and batch-norm
    parameters get 0, as in the paper.
    """
    parts = []
    for p, _ in model.parameters():
        if p.ndim == 1:
            parts.append(np.zeros(p.size))
            continue
        d = rng.standard_normal(p.shape)  # (D, H)
        d *= np.linalg.norm(p, axis=0) / np.linalg.norm(d, axis=0)  # per column j
        parts.append(d.ravel())
    return np.concatenate(parts)


def loss_surface(model, loss_fn, X, y, d1, d2, alphas, betas) -> np.ndarray:
    """L(theta + a d1 + b d2) for every (b, a) of the grid: (len(betas), len(alphas)).

    Evaluation mode (batch norm uses its running statistics, no dropout); the model gets its
    weights theta back at the end.
    """
    theta = model.flat_parameters()
    model.eval()
    surface = np.empty((len(betas), len(alphas)))
    try:
        for i, b in enumerate(betas):
            for j, a in enumerate(alphas):
                model.set_flat_parameters(theta + a * d1 + b * d2)
                surface[i, j] = loss_fn(model.forward(X), y)[0]
    finally:
        model.set_flat_parameters(theta)
    return surface


def project_path(path: np.ndarray, theta: np.ndarray, d1, d2) -> np.ndarray:
    """(K, 2) coordinates (a, b) with theta + a d1 + b d2 closest to each point of the path
    (K, P): least squares, since two random directions are not exactly orthogonal."""
    basis = np.stack([d1, d2], axis=1)  # (P, 2)
    coords, *_ = np.linalg.lstsq(basis, (path - theta).T, rcond=None)
    return coords.T


def path_directions(path: np.ndarray, theta: np.ndarray):
    """The two principal directions of the path's offsets from theta (unit vectors), and the
    fraction of the offsets' variance each explains (Li et al., 2018, section 7)."""
    _, s, vt = np.linalg.svd(path - theta, full_matrices=False)
    explained = s**2 / (s**2).sum()
    return vt[0], vt[1], explained[:2]


def landscape_panels(model, loss_fn, X, y, path, grid: int, span: float, rng):
    """Each panel: (title, axis labels, alphas, betas, surface, projected path or None)."""
    theta = model.flat_parameters()
    d1, d2 = filter_normalized_direction(model, rng), filter_normalized_direction(model, rng)
    axis = np.linspace(-span, span, grid)
    panels = [
        (
            "filter-normalised random directions",
            ("$\\alpha$ (direction 1)", "$\\beta$ (direction 2)"),
            axis,
            axis,
            loss_surface(model, loss_fn, X, y, d1, d2, axis, axis),
            None if path is None else project_path(path, theta, d1, d2),
        )
    ]
    if path is not None and len(path) >= 3:
        p1, p2, explained = path_directions(path, theta)
        coords = (path - theta) @ np.stack([p1, p2], axis=1)  # (K, 2), orthonormal basis
        reach = 1.25 * np.abs(coords).max(axis=0)
        alphas, betas = (np.linspace(-r, r, grid) for r in reach)
        labels = tuple(f"PC {k + 1} ({100 * e:.1f}% of the path)" for k, e in enumerate(explained))
        surface = loss_surface(model, loss_fn, X, y, p1, p2, alphas, betas)
        panels.append(("principal directions of the path", labels, alphas, betas, surface, coords))
    return panels


def plot_landscape(path, panels, title: str = "") -> None:
    import matplotlib.pyplot as plt

    from shared.plots import save_figure

    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.8 * len(panels), 4.8), squeeze=False, layout="constrained"
    )
    for ax, (name, labels, alphas, betas, surface, coords) in zip(axes[0], panels):
        log_loss = np.log10(surface)
        filled = ax.contourf(alphas, betas, log_loss, levels=25, cmap="viridis")
        ax.contour(alphas, betas, log_loss, levels=25, colors="white", linewidths=0.3)
        fig.colorbar(filled, ax=ax, label="log$_{10}$ training loss")
        if coords is not None:
            ax.plot(*coords.T, color="red", marker=".", lw=1, label="training path")
            ax.plot(*coords[0], "o", color="orange", label="initial weights")
        ax.plot(0, 0, "*", color="white", markeredgecolor="black", ms=12, label="trained")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(name)
        ax.legend(loc="upper right", fontsize=7)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


# ----------------------------------------------------------------------------- gradient flow


def gradient_flow(
    X,
    y,
    activation: str,
    init: str,
    batchnorm: bool,
    depth: int,
    width: int,
    epochs: int,
    seed: int,
) -> np.ndarray:
    """Mean |dL/dW| of every Dense layer at every step: (steps, depth + 1), input layer first.

    A network of `depth` hidden layers trains with momentum SGD on (X, y); mlp's own
    train_epoch runs the steps and hands over the gradients after each backward pass.
    """
    from optim import make_optimizer
    from train import DataLoader, train_epoch

    rng = np.random.default_rng(seed)
    n_classes = int(y.max()) + 1
    mcfg = ModelConfig(X.shape[1], (width,) * depth, n_classes, activation, init, 0.0, batchnorm)
    model = build_mlp(mcfg, rng)
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    optimizer = make_optimizer("momentum", model.parameters(), lr=0.01)
    loader = DataLoader(X, y, 32, rng)
    rows = []

    def record(_):
        rows.append([np.abs(layer.dW).mean() for layer in dense])

    for _ in range(epochs):
        train_epoch(model, SoftmaxCrossEntropy(), optimizer, loader, after_backward=record)
    return np.array(rows)


def plot_gradient_flow(path, flows: dict[str, np.ndarray], steps_per_epoch: int) -> None:
    import matplotlib.pyplot as plt

    from shared.plots import save_figure

    fig, axes = plt.subplots(
        1, len(flows), figsize=(4.6 * len(flows), 3.8), sharey=True, layout="constrained"
    )
    for ax, (name, flow) in zip(np.atleast_1d(axes), flows.items()):
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, flow.shape[1]))
        epochs = np.arange(1, len(flow) + 1) / steps_per_epoch
        for k in range(flow.shape[1]):
            label = "layer 1 (input)" if k == 0 else f"layer {k + 1}"
            if k == flow.shape[1] - 1:
                label += " (output)"
            ax.plot(epochs, flow[:, k], color=colours[k], lw=0.8, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("mean |dL/dW| of the layer")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


# ----------------------------------------------------------------------------- main


def main(cfg: VisualizeConfig) -> dict:
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    with threadpool_limits(cfg.threads):
        return draw_all(cfg)


def draw_all(cfg: VisualizeConfig) -> dict:
    from train import CHECKPOINT, LOSSES, load_dataset, load_model, saved_config

    from shared.data import make_toy
    from shared.logging import default_checkpoint

    out = Path(cfg.out)
    path = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint(HERE, CHECKPOINT)
    model, ckpt = load_model(path)
    train_cfg = saved_config(ckpt)
    task = ckpt["task"]
    sizes = " -> ".join(str(n) for n, _ in network_layout(model, task))
    print(f"loaded {path}: {train_cfg.dataset}, {sizes}, epoch {ckpt['step']}")

    plot_network(out / "network.png", model, task, f"{train_cfg.dataset}: {sizes}")
    plot_activations(out / "activations.png")

    data = load_dataset(train_cfg)
    X, y = data.X_train[: cfg.landscape_samples], data.y_train[: cfg.landscape_samples]
    weights = ckpt.get("path_weights") or None
    weights = None if weights is None else np.stack(weights)  # (K, P), initial weights first
    rng = np.random.default_rng(cfg.seed)
    panels = landscape_panels(model, LOSSES[task](), X, y, weights, cfg.grid, cfg.span, rng)
    plot_landscape(out / "landscape.png", panels, f"training loss around the trained {sizes}")
    centre = panels[0][4][cfg.grid // 2, cfg.grid // 2]

    Xf, yf = make_toy("spiral", n=cfg.flow_samples, seed=cfg.seed)
    flows = {
        name: gradient_flow(
            Xf, yf, act, init, bn, cfg.flow_depth, cfg.flow_width, cfg.flow_epochs, cfg.seed
        )
        for name, act, init, bn in FLOW_SETTINGS
    }
    steps_per_epoch = len(next(iter(flows.values()))) // cfg.flow_epochs
    plot_gradient_flow(out / "gradient_flow.png", flows, steps_per_epoch)
    ratios = {name: float(flow[0, 0] / flow[0, -1]) for name, flow in flows.items()}
    for name, ratio in ratios.items():
        print(
            f"gradient flow, {name}: mean |dL/dW| of the first step, input / output = {ratio:.3g}"
        )
    print(
        f"landscape centre: training loss {centre:.4g}; wrote network.png, activations.png, "
        f"landscape.png, gradient_flow.png to {out}"
    )
    return {"landscape_centre": float(centre), "input_over_output": ratios}


if __name__ == "__main__":
    cli_main(main, VisualizeConfig)
