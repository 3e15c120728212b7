"""The NumPy GAN: every backward pass against finite differences, the whole adversarial
gradient (through D into G) against torch autograd, Adam against torch.optim.Adam."""

import numpy as np
import pytest
import torch
from gan2d import (
    GAN2D,
    Adam,
    Dense,
    GAN2DConfig,
    LeakyReLU,
    discriminator_loss,
    generator_loss,
    mode_coverage,
)

from shared.data import ring8_modes


def numerical_gradient(f, x, h=1e-6):
    """Central differences of the scalar f() with respect to every entry of x (in place)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        plus = f()
        x[index] = old - h
        minus = f()
        x[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("layer_name", ["dense", "leaky_relu"])
def test_layer_backward_matches_finite_differences(layer_name):
    rng = np.random.default_rng(0)
    layer = Dense(4, 3, rng) if layer_name == "dense" else LeakyReLU(0.2)
    x = rng.standard_normal((5, 4))
    upstream = rng.standard_normal((5, 3 if layer_name == "dense" else 4))

    def loss():
        return float((layer.forward(x) * upstream).sum())

    loss()
    dx = layer.backward(upstream)
    assert np.allclose(dx, numerical_gradient(loss, x), atol=1e-7)
    for param, grad in zip(layer.params(), layer.grads(), strict=True):
        layer.forward(x)
        layer.backward(upstream)
        analytic = grad.copy()
        assert np.allclose(analytic, numerical_gradient(loss, param), atol=1e-7)


def test_losses_match_binary_cross_entropy_formula():
    real = np.array([[2.0], [-1.0], [0.3]])
    fake = np.array([[-0.5], [1.5]])
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    expected_D = -np.log(sig(real)).mean() - np.log(1 - sig(fake)).mean()
    expected_G = -np.log(sig(fake)).mean()
    assert np.isclose(discriminator_loss(real, fake)[0], expected_D)
    assert np.isclose(generator_loss(fake)[0], expected_G)


def torch_twin(model: GAN2D):
    """The same networks in torch (float64), built from our weights."""

    def build(mlp):
        layers = []
        for layer in mlp.layers:
            if isinstance(layer, Dense):
                linear = torch.nn.Linear(*layer.W.shape).double()
                linear.weight.data = torch.tensor(layer.W.T.copy())
                linear.bias.data = torch.tensor(layer.b.copy())
                layers.append(linear)
            else:
                layers.append(torch.nn.LeakyReLU(layer.slope))
        return torch.nn.Sequential(*layers)

    return build(model.G), build(model.D)


def torch_grads(net):
    """Gradients in our layout: W is (n_in, n_out), torch's weight is (n_out, n_in)."""
    grads = []
    for module in net:
        if isinstance(module, torch.nn.Linear):
            grads += [module.weight.grad.T.numpy(), module.bias.grad.numpy()]
    return grads


@pytest.mark.parametrize("pack", [1, 2])
def test_generator_gradients_through_discriminator_match_torch_autograd(pack):
    rng = np.random.default_rng(1)
    model = GAN2D(GAN2DConfig(z_dim=3, hidden=6, pack=pack), rng)
    z = rng.standard_normal((8, 3))
    loss = model.generator_grads(z)
    G, D = torch_twin(model)
    fake = G(torch.tensor(z))  # (8, 2)
    logits = D(fake.reshape(8 // pack, 2 * pack))
    torch_loss = torch.nn.functional.softplus(-logits).mean()  # -log sigmoid(D(G(z)))
    torch_loss.backward()
    assert np.isclose(loss, torch_loss.item(), atol=1e-12)
    for ours, theirs in zip(model.G.grads(), torch_grads(G), strict=True):
        assert np.allclose(ours, theirs, atol=1e-12)


def test_discriminator_gradients_match_torch_autograd():
    rng = np.random.default_rng(2)
    model = GAN2D(GAN2DConfig(z_dim=3, hidden=6, pack=2), rng)
    x_real, z = rng.standard_normal((8, 2)), rng.standard_normal((8, 3))
    loss = model.discriminator_grads(x_real, z)
    G, D = torch_twin(model)
    with torch.no_grad():
        fake = G(torch.tensor(z))
    F = torch.nn.functional
    real_logits = D(torch.tensor(x_real).reshape(4, 4))
    fake_logits = D(fake.reshape(4, 4))
    torch_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    torch_loss.backward()
    assert np.isclose(loss, torch_loss.item(), atol=1e-12)
    for ours, theirs in zip(model.D.grads(), torch_grads(D), strict=True):
        assert np.allclose(ours, theirs, atol=1e-12)


def test_generator_step_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    model = GAN2D(GAN2DConfig(z_dim=2, hidden=4, pack=2), rng)
    z = rng.standard_normal((4, 2))

    def loss():
        return float(generator_loss(model.discriminate(model.sample(z)))[0])

    model.generator_grads(z)
    analytic = [g.copy() for g in model.G.grads()]
    for param, grad in zip(model.G.params(), analytic, strict=True):
        assert np.allclose(grad, numerical_gradient(loss, param), atol=1e-7)


def test_discriminator_step_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    model = GAN2D(GAN2DConfig(z_dim=2, hidden=4, pack=2), rng)
    x_real, z = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))

    def loss():
        return float(model.discriminator_grads(x_real, z))

    model.discriminator_grads(x_real, z)
    analytic = [g.copy() for g in model.D.grads()]
    for param, grad in zip(model.D.params(), analytic, strict=True):
        assert np.allclose(grad, numerical_gradient(loss, param), atol=1e-7)


def test_adam_matches_torch_adam():
    rng = np.random.default_rng(4)
    w = rng.standard_normal(5)
    grad = np.zeros(5)
    ours = Adam([w], [grad], lr=0.1, betas=(0.5, 0.999))
    w_torch = torch.tensor(w.copy(), requires_grad=True)
    theirs = torch.optim.Adam([w_torch], lr=0.1, betas=(0.5, 0.999), eps=1e-8)
    for _ in range(5):
        g = rng.standard_normal(5)
        grad[...] = g
        ours.step()
        w_torch.grad = torch.tensor(g)
        theirs.step()
    assert np.allclose(w, w_torch.detach().numpy(), atol=1e-12)


def test_mode_coverage_counts_a_hand_made_sample():
    modes = ring8_modes()
    sigma = 0.05
    on_mode_0 = modes[0] + np.array([0.1, 0.0])  # 2 sigma away: high quality
    off_mode_1 = modes[1] + np.array([0.0, 0.2])  # 4 sigma away: not
    samples = np.concatenate([np.tile(on_mode_0, (30, 1)), np.tile(off_mode_1, (10, 1))])
    samples = np.concatenate([samples, np.tile(modes[2], (5, 1))])  # 5 exact hits, < min_count
    report = mode_coverage(samples, modes, sigma, min_count=20)
    assert report["modes_covered"] == 1
    assert np.isclose(report["high_quality_share"], 35 / 45)
    assert report["mode_counts"][:3] == [30, 0, 5]
