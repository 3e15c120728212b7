"""visualize.py: every figure's numbers checked, and the command run on a tiny trained network."""

import re
from pathlib import Path

import numpy as np
import pytest
from model import ACTIVATIONS, ModelConfig, SoftmaxCrossEntropy, build_mlp
from train import evaluate, load_dataset, load_model, saved_config
from visualize import (
    activation_curves,
    filter_normalized_direction,
    gradient_flow,
    landscape_panels,
    loss_surface,
    network_layout,
    project_path,
    shown_units,
)

from shared.data import make_toy
from shared.testing import run_script

PROJECT = Path(__file__).resolve().parents[1]


def tiny_model(seed=0, **overrides):
    cfg = ModelConfig(**{**dict(n_in=2, hidden=(6, 5), n_out=3, batchnorm=True), **overrides})
    return build_mlp(cfg, np.random.default_rng(seed))


def weight_blocks(model, theta):
    """theta (P,) cut into arrays shaped like the model's parameters."""
    blocks, offset = [], 0
    for p, _ in model.parameters():
        blocks.append(theta[offset : offset + p.size].reshape(p.shape))
        offset += p.size
    return blocks


def test_the_derivative_curves_match_finite_differences():
    x = np.linspace(-4, 4, 801)
    x = x[np.abs(x) > 1e-3]  # ReLU and LeakyReLU have a kink at 0
    h = 1e-6
    curves = activation_curves(x)
    assert set(curves) == set(ACTIVATIONS)
    for name, (_, dy) in curves.items():
        f = ACTIVATIONS[name]()
        numeric = (f.forward(x + h) - f.forward(x - h)) / (2 * h)
        np.testing.assert_allclose(dy, numeric, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(curves["sigmoid"][0], 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_allclose(curves["tanh"][1], 1 - np.tanh(x) ** 2, rtol=1e-12)


def test_filter_normalisation_gives_each_filter_the_norm_of_the_weights_filter():
    model = tiny_model()
    d = filter_normalized_direction(model, np.random.default_rng(1))
    assert d.shape == model.flat_parameters().shape
    for (p, _), block in zip(model.parameters(), weight_blocks(model, d)):
        if p.ndim == 1:  # biases, gamma, beta
            assert not block.any()
            continue
        np.testing.assert_allclose(
            np.linalg.norm(block, axis=0), np.linalg.norm(p, axis=0), rtol=1e-12
        )
        cosine = (block * p).sum() / np.linalg.norm(block) / np.linalg.norm(p)
        assert abs(cosine) < 0.9  # a random direction, not the weights themselves
    other = filter_normalized_direction(model, np.random.default_rng(2))
    assert not np.allclose(d, other)


def test_the_landscape_centre_is_the_trained_loss_and_every_point_a_real_loss():
    model = tiny_model(dropout=0.3)
    X, y = make_toy("spiral", n=60, seed=0)
    loss_fn = SoftmaxCrossEntropy()
    theta = model.flat_parameters()
    path = theta + np.random.default_rng(3).standard_normal((4, theta.size))
    panels = landscape_panels(
        model, loss_fn, X, y, path, grid=5, span=0.5, rng=np.random.default_rng(4)
    )
    assert len(panels) == 2
    trained = evaluate(model, loss_fn, X, y, "multiclass")["loss"]
    for _, _, alphas, betas, surface, coords in panels:
        assert surface.shape == (5, 5) and coords.shape == (4, 2)
        assert surface[2, 2] == pytest.approx(trained, rel=1e-12)
        assert alphas[0] < 0 < alphas[-1] and alphas[2] == betas[2] == 0
    np.testing.assert_array_equal(model.flat_parameters(), theta)  # weights given back

    # one corner recomputed on an independent copy of the network
    d1, d2 = (filter_normalized_direction(model, np.random.default_rng(s)) for s in (7, 8))
    surface = loss_surface(model, loss_fn, X, y, d1, d2, [0.0, 0.5], [0.0, -0.25])
    moved = tiny_model(dropout=0.3)
    moved.load_state_dict(model.state_dict())
    moved.set_flat_parameters(theta + 0.5 * d1 - 0.25 * d2)
    moved.eval()
    assert surface[1, 1] == pytest.approx(loss_fn(moved.forward(X), y)[0], rel=1e-12)
    assert surface[0, 0] == pytest.approx(trained, rel=1e-12)
    assert surface[1, 1] != pytest.approx(trained, rel=1e-3)


def test_a_point_of_the_plane_projects_onto_its_own_coordinates():
    model = tiny_model()
    theta = model.flat_parameters()
    d1, d2 = (filter_normalized_direction(model, np.random.default_rng(s)) for s in (1, 2))
    coords = np.array([[0.3, -0.7], [-1.2, 0.05], [0.0, 0.0]])
    path = theta + coords[:, :1] * d1 + coords[:, 1:] * d2
    np.testing.assert_allclose(project_path(path, theta, d1, d2), coords, atol=1e-10)


def test_the_network_graph_lists_layers_units_and_activations():
    model = tiny_model(activation="tanh", dropout=0.1)
    assert network_layout(model, "multiclass") == [
        (2, "input"),
        (6, "Dense → BatchNorm → Tanh → Dropout(0.1)"),
        (5, "Dense → BatchNorm → Tanh → Dropout(0.1)"),
        (3, "Dense → softmax"),
    ]
    single = build_mlp(ModelConfig(4, (), 1), np.random.default_rng(0))
    assert network_layout(single, "binary") == [(4, "input"), (1, "Dense → sigmoid")]
    assert shown_units(5) == [0, 1, 2, 3, 4]
    assert shown_units(64) == [0, 1, 2, 3, 4, 5, None, 59, 60, 61, 62, 63]


def test_gradient_flow_vanishes_through_sigmoids_and_not_with_batch_norm():
    X, y = make_toy("spiral", n=300, seed=0)
    flows = {
        bn: gradient_flow(X, y, act, init, bn, depth=5, width=16, epochs=1, seed=0)
        for act, init, bn in (("sigmoid", "xavier", False), ("relu", "he", True))
    }
    steps = -(-300 // 32)  # all 300 points, in batches of 32
    for flow in flows.values():
        assert flow.shape == (steps, 6) and (flow > 0).all()
    sigmoid, batchnorm = flows[False][0], flows[True][0]  # first step, input layer first
    assert sigmoid[0] / sigmoid[-1] < 1e-2  # each sigmoid layer scales the gradient by <= 1/4
    assert batchnorm[0] / batchnorm[-1] > 0.3


def test_the_command_draws_every_figure_around_the_trained_loss(tmp_path):
    flags = ("--dry-run", "--batchnorm", "--dropout", "0.1", "--out", tmp_path / "run")
    run_script(PROJECT, "train.py", *flags)
    figures = tmp_path / "figures"
    result = run_script(
        PROJECT,
        "visualize.py",
        "--checkpoint",
        tmp_path / "run" / "model.npz",
        "--out",
        figures,
        "--grid",
        "5",
        "--flow-epochs",
        "1",
        "--flow-depth",
        "2",
        "--flow-samples",
        "100",
    )
    for name in ("network.png", "activations.png", "landscape.png", "gradient_flow.png"):
        assert (figures / name).stat().st_size > 1000, name
    centre = float(re.search(r"landscape centre: training loss (\S+);", result.stdout).group(1))
    model, ckpt = load_model(tmp_path / "run" / "model.npz")
    data = load_dataset(saved_config(ckpt))
    trained = evaluate(model, SoftmaxCrossEntropy(), data.X_train, data.y_train, "multiclass")
    assert centre == pytest.approx(trained["loss"], rel=1e-3)  # printed with 4 digits
    assert len(ckpt["path_weights"]) == 5 and ckpt["path_epochs"] == [0, 1, 2, 3, 4]

    bad = run_script(PROJECT, "visualize.py", "--grid", "4", expect_code=2)
    assert "--grid must be odd" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
