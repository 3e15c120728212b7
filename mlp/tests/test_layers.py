"""Every layer and loss: backward against central finite differences and against torch autograd."""

import numpy as np
import pytest
import torch
from model import (
    GELU,
    MLP,
    BatchNorm1d,
    BCEWithLogitsLoss,
    Dense,
    Dropout,
    LeakyReLU,
    ModelConfig,
    MSELoss,
    ReLU,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropy,
    Tanh,
    build_mlp,
)

from shared.testing import numerical_gradient as numerical_grad
from shared.testing import relative_error as rel_error

N, D, H = 5, 4, 3


def make_layers():
    rng = np.random.default_rng(1)
    return {
        "dense": (Dense(D, H, rng, "xavier"), torch.nn.Linear(D, H).double()),
        "relu": (ReLU(), torch.nn.ReLU()),
        "leaky_relu": (LeakyReLU(0.01), torch.nn.LeakyReLU(0.01)),
        "sigmoid": (Sigmoid(), torch.nn.Sigmoid()),
        "tanh": (Tanh(), torch.nn.Tanh()),
        "gelu": (GELU(), torch.nn.GELU(approximate="tanh")),
        "softmax": (Softmax(), torch.nn.Softmax(dim=1)),
        "batchnorm": (BatchNorm1d(D), torch.nn.BatchNorm1d(D).double()),
    }


def inputs(name, rng):
    x = rng.standard_normal((N, D)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kink of (leaky) ReLU
    return x


@pytest.mark.parametrize("name", list(make_layers()))
def test_layer_backward_matches_finite_differences(name):
    layer, _ = make_layers()[name]
    rng = np.random.default_rng(2)
    x = inputs(name, rng)
    if isinstance(layer, BatchNorm1d):
        layer.gamma[...] = rng.standard_normal(D)
        layer.beta[...] = rng.standard_normal(D)
    dout = rng.standard_normal(layer.forward(x).shape)

    def loss():  # L = sum(y * dout), so dL/dy = dout
        return float((layer.forward(x) * dout).sum())

    layer.forward(x)
    dx = layer.backward(dout)
    assert rel_error(dx, numerical_grad(loss, x)) < 1e-6
    for key, value in layer.params().items():
        analytic = layer.grads()[key].copy()
        assert rel_error(analytic, numerical_grad(loss, value)) < 1e-6, key


@pytest.mark.parametrize("name", list(make_layers()))
def test_layer_matches_torch_forward_and_gradients(name):
    ours, ref = make_layers()[name]
    rng = np.random.default_rng(3)
    x = inputs(name, rng)
    with torch.no_grad():
        if isinstance(ours, Dense):  # torch keeps W as (out, in)
            ref.weight.copy_(torch.from_numpy(ours.W.T))
            ref.bias.copy_(torch.from_numpy(rng.standard_normal(H)))
            ours.b[...] = ref.bias.numpy()
        if isinstance(ours, BatchNorm1d):
            ours.gamma[...] = rng.standard_normal(D)
            ours.beta[...] = rng.standard_normal(D)
            ref.weight.copy_(torch.from_numpy(ours.gamma))
            ref.bias.copy_(torch.from_numpy(ours.beta))
    x_t = torch.tensor(x, requires_grad=True)
    y_t = ref(x_t)
    dout = rng.standard_normal(tuple(y_t.shape))
    y_t.backward(torch.from_numpy(dout))

    y = ours.forward(x)
    dx = ours.backward(dout)
    assert np.allclose(y, y_t.detach().numpy(), rtol=0, atol=1e-12)
    assert np.allclose(dx, x_t.grad.numpy(), rtol=0, atol=1e-12)
    torch_grads = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}
    for key, grad in ours.grads().items():
        ref_grad = getattr(ref, torch_grads[key]).grad.numpy()
        assert np.allclose(grad, ref_grad.T if key == "W" else ref_grad, rtol=0, atol=1e-12)


def test_batchnorm_matches_torch_in_train_and_eval_mode_with_running_statistics():
    rng = np.random.default_rng(4)
    ours, ref = BatchNorm1d(D), torch.nn.BatchNorm1d(D).double()
    for _ in range(3):  # three training batches move the running statistics
        x = rng.standard_normal((8, D)) * 3 + 1
        y = ours.forward(x)
        assert np.allclose(y, ref(torch.from_numpy(x)).detach().numpy(), atol=1e-12)
    assert np.allclose(ours.running_mean, ref.running_mean.numpy(), atol=1e-12)
    assert np.allclose(ours.running_var, ref.running_var.numpy(), atol=1e-12)
    ours.training = False
    ref.eval()
    x = rng.standard_normal((6, D))
    assert np.allclose(ours.forward(x), ref(torch.from_numpy(x)).detach().numpy(), atol=1e-12)


@pytest.mark.parametrize(
    "loss_name",
    ["mse", "bce", "softmax_ce"],
)
def test_loss_matches_torch_and_finite_differences(loss_name):
    rng = np.random.default_rng(5)
    if loss_name == "mse":
        ours, ref = MSELoss(), torch.nn.MSELoss()
        z, t = rng.standard_normal((N, 2)), rng.standard_normal((N, 2))
        t_t = torch.from_numpy(t)
    elif loss_name == "bce":
        ours, ref = BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss()
        z, t = 3 * rng.standard_normal((N, 1)), rng.integers(0, 2, N)
        t_t = torch.from_numpy(t.reshape(N, 1).astype(np.float64))
    else:
        ours, ref = SoftmaxCrossEntropy(), torch.nn.CrossEntropyLoss()
        z, t = 3 * rng.standard_normal((N, 4)), rng.integers(0, 4, N)
        t_t = torch.from_numpy(t)
    z_t = torch.tensor(z, requires_grad=True)
    loss_t = ref(z_t, t_t)
    loss_t.backward()

    loss, dz = ours(z, t)
    assert abs(loss - loss_t.item()) < 1e-12
    assert np.allclose(dz, z_t.grad.numpy(), rtol=0, atol=1e-12)
    assert rel_error(dz, numerical_grad(lambda: ours(z, t)[0], z)) < 1e-6


def test_softmax_cross_entropy_is_finite_and_exact_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
    loss, dz = SoftmaxCrossEntropy()(z, np.array([0, 1]))
    # by hand: row 0 is certain and right (loss 0); row 1 splits between two classes (log 2)
    assert np.isfinite(loss) and np.all(np.isfinite(dz))
    assert abs(loss - np.log(2) / 2) < 1e-12
    assert np.allclose(dz, [[0, 0, 0], [0, -0.25, 0.25]])


def test_dropout_masks_a_fraction_p_scales_survivors_and_is_identity_in_eval():
    layer = Dropout(0.3, np.random.default_rng(6))
    x = np.ones((200, 100))
    y = layer.forward(x)
    assert set(np.unique(y)) == {0.0, 1 / 0.7}  # dropped, or kept and scaled by 1/(1-p)
    assert abs((y == 0).mean() - 0.3) < 0.01
    dout = np.random.default_rng(7).standard_normal(x.shape)
    assert np.array_equal(layer.backward(dout), dout * y)  # the same mask gates the gradient
    layer.training = False
    assert np.array_equal(layer.forward(x), x)
    assert np.array_equal(layer.backward(dout), dout)


def test_whole_mlp_backward_matches_finite_differences():
    rng = np.random.default_rng(8)
    cfg = ModelConfig(n_in=3, hidden=(5, 4), n_out=3, activation="gelu", batchnorm=True)
    model = build_mlp(cfg, rng)
    x, y = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    loss_fn = SoftmaxCrossEntropy()
    _, dz = loss_fn(model.forward(x), y)
    dx = model.backward(dz)
    assert rel_error(dx, numerical_grad(lambda: loss_fn(model.forward(x), y)[0], x)) < 1e-6
    for p, g in model.parameters():  # the Dense biases before BatchNorm have gradient 0: atol
        numerical = numerical_grad(lambda: loss_fn(model.forward(x), y)[0], p)
        assert np.allclose(g, numerical, rtol=1e-6, atol=1e-9)


def test_zero_initialisation_keeps_hidden_units_identical_after_training():
    from optim import SGD

    rng = np.random.default_rng(9)
    model = MLP([Dense(2, 4, rng, "zeros"), Sigmoid(), Dense(4, 1, rng, "zeros")])
    optimizer = SGD(model.parameters(), lr=0.5)
    x, y = rng.standard_normal((16, 2)), rng.integers(0, 2, 16)
    for _ in range(20):
        _, dz = BCEWithLogitsLoss()(model.forward(x), y)
        model.backward(dz)
        optimizer.step()
    W1 = model.layers[0].W
    assert np.abs(model.layers[2].W).max() > 0  # the output layer did learn
    assert np.abs(W1).max() > 0 and np.allclose(
        W1, W1[:, :1]
    )  # but all four hidden units are still the same unit


def test_dropout_backward_matches_finite_differences_for_a_fixed_mask():
    layer = Dropout(0.4)
    rng = np.random.default_rng(10)
    x, dout = rng.standard_normal((N, D)), rng.standard_normal((N, D))

    def loss():  # a fresh generator with the same seed draws the same mask every time
        layer.rng = np.random.default_rng(0)
        return float((layer.forward(x) * dout).sum())

    loss()
    dx = layer.backward(dout)
    assert rel_error(dx, numerical_grad(loss, x)) < 1e-6


def test_batchnorm_backward_in_eval_mode_matches_torch_and_finite_differences():
    rng = np.random.default_rng(3)
    ours = BatchNorm1d(D)
    ours.gamma[...] = rng.standard_normal(D)
    ours.beta[...] = rng.standard_normal(D)
    ours.training = True
    ours.forward(rng.standard_normal((8, D)))  # a training batch of another size first
    ours.training = False
    x = rng.standard_normal((N, D))
    dout = rng.standard_normal((N, D))
    ours.forward(x)
    dx = ours.backward(dout)
    theirs = torch.nn.BatchNorm1d(D, dtype=torch.float64).eval()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.gamma))
        theirs.bias.copy_(torch.from_numpy(ours.beta))
        theirs.running_mean.copy_(torch.from_numpy(ours.running_mean))
        theirs.running_var.copy_(torch.from_numpy(ours.running_var))
    xt = torch.from_numpy(x).requires_grad_(True)
    theirs(xt).backward(torch.from_numpy(dout))
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.dgamma, theirs.weight.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.dbeta, theirs.bias.grad.numpy(), atol=1e-12)
    assert rel_error(dx, numerical_grad(lambda: ours.forward(x), x, dout)) < 1e-8


def test_batchnorm_refuses_a_training_batch_of_one_like_torch():
    layer = BatchNorm1d(D)
    layer.training = True
    with pytest.raises(ValueError, match="more than one sample"):
        layer.forward(np.ones((1, D)))
    np.testing.assert_array_equal(layer.running_var, np.ones(D))  # untouched


def test_binary_cross_entropy_with_several_columns_matches_torch():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((N, 3))
    t = (rng.random((N, 3)) > 0.5).astype(np.float64)
    loss, dz = BCEWithLogitsLoss()(z, t)
    zt = torch.from_numpy(z).requires_grad_(True)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.from_numpy(t))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), atol=1e-14)


def test_dropout_of_every_unit_gives_zeros_like_torch():
    layer = Dropout(p=1.0)
    layer.training = True
    x = np.random.default_rng(5).standard_normal((N, D))
    out = layer.forward(x)
    expected = torch.nn.functional.dropout(torch.from_numpy(x), p=1.0, training=True).numpy()
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), np.zeros_like(x))
