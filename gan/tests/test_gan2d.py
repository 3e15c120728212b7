"""The NumPy GAN: every backward pass against finite differences, the whole adversarial
gradient (through D into G) and the discriminator's loss against torch autograd, Adam against
torch.optim.Adam, the state a checkpoint keeps."""

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
from shared.testing import numerical_gradient, relative_error


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
    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-8
    for param, grad in zip(layer.params(), layer.grads(), strict=True):
        layer.forward(x)
        layer.backward(upstream)
        analytic = grad.copy()
        assert relative_error(analytic, numerical_gradient(loss, param)) < 1e-8


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


@pytest.mark.parametrize("n_real, n_fake", [(8, 8), (12, 4), (4, 10)])
def test_discriminator_loss_and_gradients_match_torch_bce_for_any_batch_sizes(n_real, n_fake):
    """L_D = BCE(D(x), 1) + BCE(D(G(z)), 0), each averaged over its own batch."""
    rng = np.random.default_rng(2)
    model = GAN2D(GAN2DConfig(z_dim=3, hidden=6, pack=2), rng)
    x_real, z = rng.standard_normal((n_real, 2)), rng.standard_normal((n_fake, 3))
    loss = model.discriminator_grads(x_real, z)
    G, D = torch_twin(model)
    with torch.no_grad():
        fake = G(torch.tensor(z))
    bce = torch.nn.BCEWithLogitsLoss()
    real_logits = D(torch.tensor(x_real).reshape(n_real // 2, 4))
    fake_logits = D(fake.reshape(n_fake // 2, 4))
    torch_loss = bce(real_logits, torch.ones_like(real_logits))
    torch_loss = torch_loss + bce(fake_logits, torch.zeros_like(fake_logits))
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
        assert relative_error(grad, numerical_gradient(loss, param)) < 1e-6


def test_discriminator_step_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    model = GAN2D(GAN2DConfig(z_dim=2, hidden=4, pack=2), rng)
    x_real, z = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))

    def loss():
        return float(model.discriminator_grads(x_real, z))

    model.discriminator_grads(x_real, z)
    analytic = [g.copy() for g in model.D.grads()]
    for param, grad in zip(model.D.params(), analytic, strict=True):
        assert relative_error(grad, numerical_gradient(loss, param)) < 1e-6


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


def test_a_batch_that_does_not_fill_its_packs_is_refused():
    model = GAN2D(GAN2DConfig(z_dim=2, hidden=4, pack=2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="groups of 2"):
        model.discriminator_grads(np.zeros((5, 2)), np.zeros((4, 2)))


def test_state_dict_round_trip_restores_samples_and_adam():
    rng = np.random.default_rng(6)
    model = GAN2D(GAN2DConfig(z_dim=2, hidden=4), rng)
    opt = Adam(model.G.params(), model.G.grads(), lr=0.1)
    model.generator_grads(rng.standard_normal((4, 2)))
    opt.step()
    twin = GAN2D(GAN2DConfig(z_dim=2, hidden=4), np.random.default_rng(7))
    twin_opt = Adam(twin.G.params(), twin.G.grads(), lr=0.1)
    twin.load_state_dict(model.state_dict())
    twin_opt.load_state_dict(opt.state_dict())
    z = rng.standard_normal((3, 2))
    assert np.array_equal(twin.sample(z), model.sample(z))
    assert twin_opt.t == 1
    assert all(np.array_equal(a, b) for a, b in zip(twin_opt.m + twin_opt.v, opt.m + opt.v))
    with pytest.raises(ValueError, match="G.0"):
        GAN2D(GAN2DConfig(z_dim=2, hidden=5), rng).load_state_dict(model.state_dict())
