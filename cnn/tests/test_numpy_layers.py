"""The NumPy layers against torch (same inputs, float64) and against finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy_cnn import (
    SGD,
    Adam,
    AvgPool2D,
    BatchNorm2d,
    Conv2D,
    Dense,
    Dropout,
    MaxPool2D,
    NumpyCNN,
    NumpyCNNConfig,
    ReLU,
    conv2d_naive,
    count_parameters,
    softmax_cross_entropy,
)

from shared.testing import numerical_gradient, relative_error

F64 = np.float64
# (N, C, H, W, F, kernel, stride, pad): odd and even sizes, non-square leftovers, big padding
CONV_CASES = [
    (2, 3, 7, 7, 4, 3, 1, 1),
    (2, 2, 8, 6, 3, 3, 2, 0),
    (1, 3, 9, 9, 2, 5, 2, 2),
    (3, 1, 6, 6, 5, 1, 1, 0),
    (2, 2, 7, 5, 3, 2, 3, 1),
    (1, 2, 5, 5, 2, 4, 1, 3),
]
POOL_CASES = [(2, 3, 8, 8, 2, 2), (1, 2, 7, 9, 3, 2), (2, 1, 6, 6, 3, 3), (1, 2, 5, 5, 2, 1)]


@pytest.mark.parametrize("N, C, H, W, Fo, K, S, P", CONV_CASES)
def test_conv2d_matches_torch_forward_and_gradients(N, C, H, W, Fo, K, S, P):
    rng = np.random.default_rng(0)
    conv = Conv2D(C, Fo, K, S, P, rng, dtype=F64)
    conv.params["b"][...] = rng.standard_normal(Fo)
    x = rng.standard_normal((N, C, H, W))
    y = conv.forward(x)
    dout = rng.standard_normal(y.shape)
    dx = conv.backward(dout)

    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(conv.params["W"], requires_grad=True)
    tb = torch.tensor(conv.params["b"], requires_grad=True)
    ty = F.conv2d(tx, tw, tb, stride=S, padding=P)
    ty.backward(torch.tensor(dout))
    assert np.allclose(y, ty.detach().numpy(), atol=1e-10)
    assert np.allclose(dx, tx.grad.numpy(), atol=1e-10)
    assert np.allclose(conv.grads["W"], tw.grad.numpy(), atol=1e-10)
    assert np.allclose(conv.grads["b"], tb.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("N, C, H, W, Fo, K, S, P", CONV_CASES)
def test_loop_convolution_equals_the_im2col_convolution(N, C, H, W, Fo, K, S, P):
    rng = np.random.default_rng(1)
    conv = Conv2D(C, Fo, K, S, P, rng, dtype=F64)
    conv.params["b"][...] = rng.standard_normal(Fo)
    x = rng.standard_normal((N, C, H, W))
    naive = conv2d_naive(x, conv.params["W"], conv.params["b"], S, P)
    assert np.allclose(conv.forward(x), naive, atol=1e-12)


def test_conv2d_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    conv = Conv2D(2, 3, 3, 2, 1, rng, dtype=F64)
    x = rng.standard_normal((2, 2, 5, 5))
    dout = rng.standard_normal(conv.forward(x).shape)
    dx = conv.backward(dout)
    assert np.allclose(dx, numerical_gradient(lambda: conv.forward(x), x, dout), atol=1e-8)
    for name in ("W", "b"):
        p = conv.params[name]
        assert np.allclose(
            conv.grads[name], numerical_gradient(lambda: conv.forward(x), p, dout), atol=1e-8
        )


@pytest.mark.parametrize("N, C, H, W, K, S", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_match_torch_forward_and_gradients(kind, N, C, H, W, K, S):
    rng = np.random.default_rng(3)
    pool = MaxPool2D(K, S) if kind == "max" else AvgPool2D(K, S)
    x = rng.standard_normal((N, C, H, W))
    y = pool.forward(x)
    dout = rng.standard_normal(y.shape)
    dx = pool.backward(dout)
    tx = torch.tensor(x, requires_grad=True)
    ty = (F.max_pool2d if kind == "max" else F.avg_pool2d)(tx, K, S)
    ty.backward(torch.tensor(dout))
    assert np.allclose(y, ty.detach().numpy(), atol=1e-12)
    assert np.allclose(dx, tx.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_gradients_match_finite_differences(kind):
    rng = np.random.default_rng(4)
    pool = MaxPool2D(3, 2) if kind == "max" else AvgPool2D(3, 2)
    x = rng.standard_normal((2, 2, 7, 7))  # continuous values: no ties, max is differentiable
    dout = rng.standard_normal(pool.forward(x).shape)
    dx = pool.backward(dout)
    assert np.allclose(dx, numerical_gradient(lambda: pool.forward(x), x, dout), atol=1e-8)


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (2, 2, 3, 7), (8, 1, 2, 2)])
def test_batchnorm2d_matches_torch_in_training_and_evaluation(shape):
    rng = np.random.default_rng(5)
    C = shape[1]
    bn = BatchNorm2d(C, dtype=F64)
    bn.params["gamma"][...] = rng.standard_normal(C)
    bn.params["beta"][...] = rng.standard_normal(C)
    x = rng.standard_normal(shape) * 3 + 1
    y = bn.forward(x)
    dout = rng.standard_normal(shape)
    dx = bn.backward(dout)

    ref = torch.nn.BatchNorm2d(C).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(bn.params["gamma"]))
        ref.bias.copy_(torch.tensor(bn.params["beta"]))
    tx = torch.tensor(x, requires_grad=True)
    ty = ref(tx)
    ty.backward(torch.tensor(dout))
    assert np.allclose(y, ty.detach().numpy(), atol=1e-10)
    assert np.allclose(dx, tx.grad.numpy(), atol=1e-10)
    assert np.allclose(bn.grads["gamma"], ref.weight.grad.numpy(), atol=1e-10)
    assert np.allclose(bn.grads["beta"], ref.bias.grad.numpy(), atol=1e-10)
    assert np.allclose(bn.running_mean, ref.running_mean.numpy(), atol=1e-12)
    assert np.allclose(bn.running_var, ref.running_var.numpy(), atol=1e-12)

    bn.training = False
    ref.eval()
    assert np.allclose(bn.forward(x), ref(tx).detach().numpy(), atol=1e-10)


def test_batchnorm2d_gradients_match_finite_differences():
    rng = np.random.default_rng(6)
    bn = BatchNorm2d(2, dtype=F64)
    bn.params["gamma"][...] = rng.standard_normal(2)
    x = rng.standard_normal((3, 2, 3, 3))
    dout = rng.standard_normal(x.shape)
    bn.forward(x)
    dx = bn.backward(dout)
    assert np.allclose(dx, numerical_gradient(lambda: bn.forward(x), x, dout), atol=1e-7)
    gamma = bn.params["gamma"]
    assert np.allclose(
        bn.grads["gamma"], numerical_gradient(lambda: bn.forward(x), gamma, dout), atol=1e-7
    )


def test_dense_relu_and_softmax_cross_entropy_match_torch():
    rng = np.random.default_rng(7)
    dense, relu = Dense(6, 4, rng, dtype=F64), ReLU()
    x, y = rng.standard_normal((5, 6)), rng.integers(0, 4, 5)
    logits = relu.forward(dense.forward(x))
    loss, dlogits = softmax_cross_entropy(logits, y)
    dx = dense.backward(relu.backward(dlogits))

    tx = torch.tensor(x, requires_grad=True)
    tW = torch.tensor(dense.params["W"], requires_grad=True)
    tb = torch.tensor(dense.params["b"], requires_grad=True)
    tloss = F.cross_entropy(torch.relu(tx @ tW + tb), torch.tensor(y))
    tloss.backward()
    assert np.isclose(loss, tloss.item(), atol=1e-12)
    assert np.allclose(dx, tx.grad.numpy(), atol=1e-12)
    assert np.allclose(dense.grads["W"], tW.grad.numpy(), atol=1e-12)
    assert np.allclose(dense.grads["b"], tb.grad.numpy(), atol=1e-12)


def test_dropout_keeps_the_expected_value_and_routes_gradients_through_kept_units():
    drop = Dropout(0.3, np.random.default_rng(8))
    x = np.ones((200, 500))
    y = drop.forward(x)
    assert abs(y.mean() - 1.0) < 0.01  # inverted dropout: E[y] = x
    assert np.allclose(np.unique(y), [0.0, 1 / 0.7])
    assert np.array_equal(drop.backward(np.ones_like(x)), y)  # d(x * mask)/dx = mask
    drop.training = False
    assert np.array_equal(drop.forward(x), x)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizers_match_torch_over_several_steps(name):
    rng = np.random.default_rng(9)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    p, g = p0.copy(), np.zeros_like(p0)
    tp = torch.tensor(p0, requires_grad=True)
    if name == "sgd":
        ours = SGD({"p": (p, g)}, lr=0.1, momentum=0.9, weight_decay=0.01)
        ref = torch.optim.SGD([tp], lr=0.1, momentum=0.9, weight_decay=0.01)
    else:
        ours = Adam({"p": (p, g)}, lr=0.01, weight_decay=0.01)
        ref = torch.optim.Adam([tp], lr=0.01, weight_decay=0.01)
    for grad in grads:
        g[...] = grad
        ours.step()
        tp.grad = torch.tensor(grad)
        ref.step()
    assert np.allclose(p, tp.detach().numpy(), atol=1e-12)


def test_whole_numpy_cnn_gradient_matches_finite_differences():
    rng = np.random.default_rng(10)
    cfg = NumpyCNNConfig(image_size=8, channels=(2, 3), hidden=5, num_classes=3, dropout=0.0)
    model = NumpyCNN(cfg, rng, dtype=F64)
    x, y = rng.standard_normal((4, 1, 8, 8)), np.array([0, 1, 2, 1])
    _, dlogits = softmax_cross_entropy(model.forward(x), y)
    dx = model.backward(dlogits)
    W = model.layers[0].params["W"]
    dW = model.layers[0].grads["W"].copy()

    def loss():
        return softmax_cross_entropy(model.forward(x), y)[0]

    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-7
    assert relative_error(dW, numerical_gradient(loss, W)) < 1e-7


def test_skipping_the_input_gradient_leaves_the_parameter_gradients_unchanged():
    rng = np.random.default_rng(12)
    cfg = NumpyCNNConfig(image_size=8, channels=(2, 3), hidden=5, num_classes=3, dropout=0.0)
    model = NumpyCNN(cfg, rng, dtype=F64)
    x, y = rng.standard_normal((4, 1, 8, 8)), np.array([0, 1, 2, 1])
    _, dlogits = softmax_cross_entropy(model.forward(x), y)
    assert model.backward(dlogits) is not None
    full = {k: g.copy() for k, (_, g) in model.parameters().items()}
    assert model.backward(dlogits, input_grad=False) is None
    for name, (_, grad) in model.parameters().items():
        assert np.array_equal(grad, full[name]), name


def test_a_few_adam_steps_reduce_the_numpy_cnn_loss():
    rng = np.random.default_rng(11)
    # No dropout and no batch norm: the same loss function at every step and at the end.
    cfg = NumpyCNNConfig(image_size=8, channels=(4, 8), hidden=16, dropout=0.0, batchnorm=False)
    model = NumpyCNN(cfg, rng)
    x = rng.random((32, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    opt = Adam(model.parameters(), lr=1e-2)
    first = softmax_cross_entropy(model.forward(x), y)[0]
    for _ in range(20):
        _, d = softmax_cross_entropy(model.forward(x), y)
        model.backward(d)
        opt.step()
    assert softmax_cross_entropy(model.forward(x), y)[0] < 0.75 * first


def test_batchnorm2d_backward_in_eval_mode_matches_torch_and_finite_differences():
    rng = np.random.default_rng(7)
    bn = BatchNorm2d(3, dtype=F64)
    bn.params["gamma"][...] = rng.standard_normal(3)
    bn.params["beta"][...] = rng.standard_normal(3)
    bn.forward(rng.standard_normal((4, 3, 5, 5)))  # a training batch of another size first
    bn.training = False
    x = rng.standard_normal((2, 3, 4, 4))
    dout = rng.standard_normal((2, 3, 4, 4))
    bn.forward(x)
    dx = bn.backward(dout)
    ref = torch.nn.BatchNorm2d(3, dtype=torch.float64).eval()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(bn.params["gamma"]))
        ref.bias.copy_(torch.from_numpy(bn.params["beta"]))
        ref.running_mean.copy_(torch.from_numpy(bn.running_mean))
        ref.running_var.copy_(torch.from_numpy(bn.running_var))
    xt = torch.from_numpy(x).requires_grad_(True)
    ref(xt).backward(torch.from_numpy(dout))
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(bn.grads["gamma"], ref.weight.grad.numpy(), atol=1e-12)
    assert np.allclose(dx, numerical_gradient(lambda: bn.forward(x), x, dout), atol=1e-7)


def test_dropout_of_every_unit_gives_zeros_like_torch():
    layer = Dropout(p=1.0)
    x = np.random.default_rng(8).standard_normal((3, 4))
    expected = F.dropout(torch.from_numpy(x), p=1.0, training=True).numpy()
    np.testing.assert_array_equal(layer.forward(x), expected)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), np.zeros_like(x))


@pytest.mark.parametrize("kernel", [2, 4, 5])
def test_numpy_cnn_takes_even_and_odd_kernels(kernel):
    cfg = NumpyCNNConfig(image_size=16, kernel=kernel, channels=(2, 3), hidden=5)
    model = NumpyCNN(cfg, np.random.default_rng(0), dtype=F64)
    x = np.random.default_rng(1).random((2, 1, 16, 16))
    logits = model.forward(x)
    side = 16
    for _ in range(2):  # conv with padding kernel // 2, then a 2x2 pool
        side = (side + 2 * (kernel // 2) - kernel + 1) // 2
    assert logits.shape == (2, 10) and model.layers[-3].params["W"].shape[0] == 3 * side * side


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizer_state_round_trip_continues_exactly(name):
    """What a checkpoint keeps: a copy restored from state_dict takes the same next step."""
    rng = np.random.default_rng(13)
    make = SGD if name == "sgd" else Adam
    p, g = rng.standard_normal(4), np.zeros(4)
    ours = make({"p": (p, g)}, lr=0.1)
    for _ in range(3):
        g[...] = rng.standard_normal(4)
        ours.step()
    q = p.copy()
    copy = make({"p": (q, g)}, lr=0.1)
    copy.load_state_dict(ours.state_dict())
    g[...] = rng.standard_normal(4)
    ours.step(), copy.step()
    np.testing.assert_array_equal(p, q)


def test_loading_a_state_of_another_shape_names_the_entry():
    cfg = NumpyCNNConfig(image_size=8, channels=(2, 3), hidden=5)
    state = NumpyCNN(cfg).state_dict()
    other = NumpyCNN(NumpyCNNConfig(image_size=8, channels=(2, 4), hidden=5))
    with pytest.raises(ValueError, match="model entries missing or of another shape: 4.W"):
        other.load_state_dict(state)


def test_parameter_count_without_building_equals_the_built_model():
    for cfg in (
        NumpyCNNConfig(),
        NumpyCNNConfig(in_channels=3, image_size=28, channels=(5, 7), kernel=4, batchnorm=False),
    ):
        built = sum(p.size for p, _ in NumpyCNN(cfg).parameters().values())
        assert count_parameters(cfg) == built
