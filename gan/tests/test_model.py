"""The image GANs: each loss against its formula and hand-worked values, the gradient penalty
against autograd by hand, our spectral norm against SVD and torch's parametrization, shapes,
a step of each player lowering its own loss, checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F
from model import (
    LOSSES,
    MODEL_LOSS,
    MODELS,
    GANConfig,
    ImageGAN,
    SpectralNorm,
    apply_spectral_norm,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    latent_walk,
)

from shared.checkpoint import load_checkpoint, load_model_state, save_checkpoint

REAL = torch.tensor([[2.0], [-1.0], [0.5]], dtype=torch.float64)
FAKE = torch.tensor([[-0.5], [1.5], [0.0]], dtype=torch.float64)


def by_formula(kind, real, fake):
    """(L_D, L_G) written out element by element, from the papers' definitions."""
    r, f = real.flatten().tolist(), fake.flatten().tolist()
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    sig = lambda a: 1 / (1 + math.exp(-a))  # noqa: E731
    if kind == "non-saturating":
        d = -mean([math.log(sig(a)) for a in r]) - mean([math.log(1 - sig(a)) for a in f])
        return d, -mean([math.log(sig(a)) for a in f])
    if kind == "least-squares":
        d = 0.5 * mean([(a - 1) ** 2 for a in r]) + 0.5 * mean([a**2 for a in f])
        return d, 0.5 * mean([(a - 1) ** 2 for a in f])
    if kind == "wasserstein":
        return mean(f) - mean(r), -mean(f)
    return mean([max(0, 1 - a) for a in r]) + mean([max(0, 1 + a) for a in f]), -mean(f)


@pytest.mark.parametrize("kind", LOSSES)
def test_each_loss_matches_its_formula_on_fixed_inputs(kind):
    expected_D, expected_G = by_formula(kind, REAL, FAKE)
    assert math.isclose(discriminator_loss(kind, REAL, FAKE).item(), expected_D, abs_tol=1e-12)
    assert math.isclose(generator_loss(kind, FAKE).item(), expected_G, abs_tol=1e-12)


def test_non_saturating_loss_equals_binary_cross_entropy():
    bce = F.binary_cross_entropy_with_logits
    expected = bce(REAL, torch.ones_like(REAL)) + bce(FAKE, torch.zeros_like(FAKE))
    assert torch.allclose(discriminator_loss("non-saturating", REAL, FAKE), expected)
    assert torch.allclose(generator_loss("non-saturating", FAKE), bce(FAKE, torch.ones_like(FAKE)))


def small_config(**overrides):
    return GANConfig(**{"image_size": 8, "z_dim": 4, "width": 4, **overrides})


def test_gradient_penalty_equals_one_computed_with_autograd_by_hand():
    torch.manual_seed(0)
    critic = ImageGAN(small_config(model="wgan-gp")).discriminator.double()
    real = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    fake = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    epsilon = torch.rand(5, 1, 1, 1, dtype=torch.float64)
    ours = gradient_penalty(critic, real, fake, epsilon=epsilon)
    penalty = 0.0
    for i in range(5):  # one sample at a time: grad of D(x_hat_i) with respect to x_hat_i
        x_hat = (epsilon[i] * real[i : i + 1] + (1 - epsilon[i]) * fake[i : i + 1]).requires_grad_()
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
        penalty += (grad.norm() - 1) ** 2 / 5
    assert torch.allclose(ours, penalty, atol=1e-12)
    # The penalty trains the critic: its gradient in the critic's weights (a gradient of a
    # gradient) must match too, not only its value.
    params = list(critic.parameters())[:-1]  # the last bias does not enter grad_x D
    ours_grads = torch.autograd.grad(ours, params)
    by_hand_grads = torch.autograd.grad(penalty, params)
    for a, b in zip(ours_grads, by_hand_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    w = torch.tensor([3.0, 4.0], dtype=torch.float64)  # grad_x (w . x) = w, ||w|| = 5

    def critic(x, labels=None):
        return x.flatten(1) @ w[:, None]

    real = torch.randn(6, 1, 1, 2, dtype=torch.float64)
    fake = torch.randn(6, 1, 1, 2, dtype=torch.float64)
    assert torch.allclose(gradient_penalty(critic, real, fake), torch.tensor(16.0).double())


@pytest.mark.parametrize("layer", [torch.nn.Linear(7, 5), torch.nn.Conv2d(3, 4, 3)])
def test_spectral_norm_sigma_converges_to_largest_singular_value(layer):
    torch.manual_seed(0)
    sn = SpectralNorm(layer.double())
    for _ in range(100):
        sn.power_iteration(1)
    sigma = torch.linalg.svdvals(layer.weight.flatten(1))[0]
    assert torch.allclose(sn.sigma(), sigma, rtol=1e-8)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_spectral_norm_matches_torch_parametrization_from_the_same_vectors(kind):
    torch.manual_seed(0)
    make = lambda: torch.nn.Linear(6, 5) if kind == "linear" else torch.nn.Conv2d(2, 3, 3)  # noqa: E731
    ours = SpectralNorm(make().double())
    reference = make().double()
    reference.load_state_dict(ours.layer.state_dict())
    reference = torch.nn.utils.parametrizations.spectral_norm(reference)
    ours.u.copy_(reference.parametrizations.weight[0]._u)  # the same starting vectors
    ours.v.copy_(reference.parametrizations.weight[0]._v)
    x = torch.randn(4, 6, dtype=torch.float64) if kind == "linear" else torch.randn(4, 2, 5, 5)
    x = x.double()
    for _ in range(3):  # training-mode forwards: one power iteration each
        out_ours, out_ref = ours(x), reference(x)
        assert torch.allclose(out_ours, out_ref, atol=1e-12)
        out_ours.square().sum().backward()
        out_ref.square().sum().backward()
        grad_ref = reference.parametrizations.weight.original.grad
        assert torch.allclose(ours.layer.weight.grad, grad_ref, atol=1e-10)
        ours.zero_grad()
        reference.zero_grad()


def test_spectral_norm_keeps_sigma_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 4, 3)
    plain, autocast = SpectralNorm(layer), SpectralNorm(torch.nn.Conv2d(3, 4, 3))
    autocast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 5, 5)
    plain(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = autocast(x)
    assert out.dtype == torch.bfloat16  # the convolution itself runs in bf16
    assert autocast.u.dtype == torch.float32
    assert torch.equal(autocast.u, plain.u) and torch.equal(autocast.v, plain.v)
    assert torch.equal(autocast.sigma(), plain.sigma())


@pytest.mark.parametrize("kind", LOSSES)
def test_losses_and_penalty_are_float32_from_bf16_scores(kind):
    real, fake = REAL.bfloat16(), FAKE.bfloat16()
    assert discriminator_loss(kind, real, fake).dtype == torch.float32
    assert generator_loss(kind, fake).dtype == torch.float32


def test_gradient_penalty_with_a_loss_scale_equals_the_unscaled_one():
    torch.manual_seed(0)
    critic = ImageGAN(small_config(model="wgan-gp")).discriminator.double()
    real, fake = torch.rand(4, 1, 8, 8).double(), torch.rand(4, 1, 8, 8).double()
    eps = torch.rand(4, 1, 1, 1).double()
    plain = gradient_penalty(critic, real, fake, epsilon=eps)
    scaled = gradient_penalty(critic, real, fake, epsilon=eps, scale=2.0**16)
    assert torch.allclose(scaled, plain, rtol=1e-12)


def test_spectral_norm_makes_a_linear_layer_one_lipschitz():
    torch.manual_seed(0)
    layer = SpectralNorm(torch.nn.Linear(10, 10, bias=False).double())
    for _ in range(50):
        layer(torch.zeros(1, 10, dtype=torch.float64))  # power iterations in training mode
    x = torch.randn(100, 10, dtype=torch.float64)
    ratios = layer(x).norm(dim=1) / x.norm(dim=1)
    assert ratios.max() <= 1 + 1e-6


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_generator_and_discriminator_shapes(model, conditional, spectral_norm):
    config = small_config(model=model, n_classes=10 if conditional else 0)
    config.spectral_norm = spectral_norm
    gan = ImageGAN(config)
    labels = torch.arange(6) % 10 if conditional else None
    images = gan.generator(torch.randn(6, 4), labels)
    assert images.shape == (6, 1, 8, 8)
    assert gan.discriminator(images, labels).shape == (6, 1)
    wrapped = [m for m in gan.discriminator.modules() if isinstance(m, SpectralNorm)]
    assert len(wrapped) == (3 if spectral_norm else 0)


def test_apply_spectral_norm_wraps_any_discriminator():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 1))
    apply_spectral_norm(net)
    assert isinstance(net[0], SpectralNorm) and isinstance(net[2], SpectralNorm)


@pytest.mark.parametrize(
    "kind, real, fake, expected_D, expected_G",
    [  # worked by hand: D's outputs on one real and one generated image
        ("non-saturating", 0.0, 0.0, 2 * math.log(2), math.log(2)),  # D = 1/2 on both
        ("non-saturating", math.log(3), -math.log(3), 2 * math.log(4 / 3), math.log(4)),
        ("least-squares", 1.0, 0.0, 0.0, 0.5),  # D already right: only G pays
        ("least-squares", 0.0, 1.0, 1.0, 0.0),
        ("wasserstein", 3.0, 1.0, -2.0, -1.0),  # L_D = -(critic's W_1 estimate 3 - 1)
        ("hinge", 0.5, -2.0, 0.5, 2.0),  # fake beyond the margin: no loss from it
        ("hinge", 2.0, 0.0, 1.0, 0.0),
    ],
)
def test_losses_on_hand_worked_outputs(kind, real, fake, expected_D, expected_G):
    r, f = torch.tensor([[real]]), torch.tensor([[fake]])
    assert math.isclose(discriminator_loss(kind, r, f).item(), expected_D, abs_tol=1e-6)
    assert math.isclose(generator_loss(kind, f).item(), expected_G, abs_tol=1e-6)


def loss_after_a_step(player, loss_fn, lr=1e-4):
    """The loss before and after one small Adam step on that loss alone (same inputs)."""
    optimizer = torch.optim.Adam(player.parameters(), lr=lr)
    before = loss_fn()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    return before.item(), loss_fn().item()  # with autograd on: the penalty differentiates D


@pytest.mark.parametrize("model", MODELS)
def test_each_players_step_lowers_its_own_loss(model):
    """Each loss is one its player can descend: the gradient reaches the player's parameters
    (through D into G for the generator) and points uphill, so a small step lowers it."""
    torch.manual_seed(0)
    config = small_config(model=model, loss=MODEL_LOSS[model])
    gan = ImageGAN(config).double()
    G, D = gan.generator, gan.discriminator
    real = torch.rand(8, 1, 8, 8, dtype=torch.float64) * 2 - 1
    z = torch.randn(8, 4, dtype=torch.float64)
    eps = torch.rand(8, 1, 1, 1, dtype=torch.float64)
    fake = G(z).detach()

    def loss_D():
        loss = discriminator_loss(config.loss, D(real), D(fake))
        if model == "wgan-gp":
            loss = loss + 10 * gradient_penalty(D, real, fake, epsilon=eps)
        return loss

    before, after = loss_after_a_step(D, loss_D)
    assert after < before - 1e-6
    before, after = loss_after_a_step(G, lambda: generator_loss(config.loss, D(G(z))))
    assert after < before - 1e-6


def test_checkpoint_round_trip_restores_the_same_samples(tmp_path):
    torch.manual_seed(0)
    config = small_config(model="dcgan", n_classes=10, spectral_norm=True)
    gan = ImageGAN(config).eval()
    z, labels = torch.randn(4, 4), torch.tensor([0, 3, 5, 9])
    save_checkpoint(tmp_path / "model.pt", {"model": gan.state_dict(), "config": vars(config)})
    state = load_checkpoint(tmp_path / "model.pt", required=("model", "config"))
    restored = ImageGAN(GANConfig(**state["config"])).eval()
    load_model_state(restored, state["model"])
    assert torch.equal(gan.sample(z, labels), restored.sample(z, labels))
    assert torch.equal(gan.discriminator.features[0].u, restored.discriminator.features[0].u)


def test_latent_walk_starts_and_ends_at_its_endpoints_on_the_sphere():
    a, b = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    b = b * a.norm() / b.norm()  # same radius: slerp stays on that sphere
    walk = latent_walk(a, b, 5)
    assert torch.allclose(walk[0], a) and torch.allclose(walk[-1], b)
    assert torch.allclose(walk.norm(dim=1), a.norm().expand(5))
