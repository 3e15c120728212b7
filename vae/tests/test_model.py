import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.distributions as td
from model import (
    MIN_PIXEL_LOG_VAR,
    VAE,
    VAEConfig,
    bernoulli_log_prob,
    continuous_bernoulli_log_prob,
    continuous_bernoulli_mean,
    gaussian_kl,
    gaussian_log_prob,
    iwae_bound,
    reparameterize,
)

from shared.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from shared.data import load_images


def _gaussian_params(batch=5, latent=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(batch, latent, generator=g, dtype=torch.float64)
    log_var = torch.randn(batch, latent, generator=g, dtype=torch.float64) * 0.7
    return mu, log_var


def test_closed_form_kl_matches_torch_distributions():
    mu, log_var = _gaussian_params()
    q = td.Normal(mu, torch.exp(0.5 * log_var))
    p = td.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = td.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu, log_var), expected, rtol=1e-12, atol=1e-12)


def test_closed_form_kl_matches_monte_carlo_estimate_within_its_standard_error():
    mu, log_var = _gaussian_params(batch=3)
    torch.manual_seed(0)
    n = 200_000
    z = reparameterize(mu.expand(n, *mu.shape), log_var.expand(n, *mu.shape))  # (n, B, L)
    zeros = torch.zeros_like(z)
    log_ratio = gaussian_log_prob(z, mu, log_var) - gaussian_log_prob(z, zeros, zeros)  # (n, B)
    estimate = log_ratio.mean(0)
    standard_error = log_ratio.std(0) / math.sqrt(n)
    assert torch.all((estimate - gaussian_kl(mu, log_var)).abs() < 4 * standard_error)


def test_reparameterised_sample_has_the_mean_and_variance_of_q():
    mu = torch.tensor([[1.5, -2.0, 0.0]], dtype=torch.float64)
    log_var = torch.tensor([[0.0, math.log(0.25), math.log(4.0)]], dtype=torch.float64)
    torch.manual_seed(1)
    n = 100_000
    z = reparameterize(mu.expand(n, 3), log_var.expand(n, 3))
    var = torch.exp(log_var)[0]
    # Sample mean within 4 standard errors; sample variance within 4 of its standard errors
    # (for a normal, var(s^2) = 2 sigma^4 / (n - 1)).
    assert torch.all((z.mean(0) - mu[0]).abs() < 4 * torch.sqrt(var / n))
    assert torch.all((z.var(0) - var).abs() < 4 * var * math.sqrt(2 / (n - 1)))


def test_reparameterised_sample_carries_gradients_to_mu_and_log_var():
    mu, log_var = _gaussian_params(batch=2, latent=3)
    mu.requires_grad_(True)
    log_var.requires_grad_(True)
    eps = torch.randn(2, 3, dtype=torch.float64)
    z = reparameterize(mu, log_var, eps)
    upstream = torch.randn(2, 3, dtype=torch.float64)
    (z * upstream).sum().backward()
    # dz/dmu = 1 and dz/dlog_var = 1/2 sigma eps, for z = mu + exp(log_var / 2) eps
    assert torch.allclose(mu.grad, upstream, atol=1e-14)
    expected = upstream * 0.5 * torch.exp(0.5 * log_var.detach()) * eps
    assert torch.allclose(log_var.grad, expected, atol=1e-14)


def _pixels(seed=0, binary=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 10, generator=g, dtype=torch.float64)
    logits = torch.randn(4, 10, generator=g, dtype=torch.float64) * 3
    return (torch.bernoulli(x, generator=g) if binary else x), logits


def test_bernoulli_log_prob_matches_torch_distributions():
    x, logits = _pixels(binary=True)
    expected = td.Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(bernoulli_log_prob(x, logits), expected, atol=1e-12)


def test_continuous_bernoulli_log_prob_and_mean_match_torch_distributions():
    x, logits = _pixels()
    logits[0, :3] = torch.tensor([0.0, 1e-4, -5e-4], dtype=torch.float64)  # the Taylor branch
    reference = td.ContinuousBernoulli(logits=logits)
    expected = reference.log_prob(x).sum(-1)
    assert torch.allclose(continuous_bernoulli_log_prob(x, logits), expected, atol=1e-9)
    assert torch.allclose(continuous_bernoulli_mean(logits), reference.mean, atol=1e-7)


def test_continuous_bernoulli_density_integrates_to_one():
    logits = torch.tensor([-6.0, -1.0, 0.0, 2e-4, 0.5, 4.0], dtype=torch.float64)
    grid = torch.linspace(0, 1, 20_001, dtype=torch.float64)[:, None]  # (G, 1)
    density = torch.exp(
        continuous_bernoulli_log_prob(
            grid.expand(len(grid), 6)[..., None], logits.expand(len(grid), 6)[..., None]
        )
    )  # (G, 6)
    assert torch.allclose(torch.trapezoid(density, grid[:, 0], dim=0), torch.ones(6).double())


def test_gaussian_log_prob_matches_torch_distributions():
    x, mean = _pixels()
    log_var = torch.randn_like(x)
    expected = td.Normal(mean, torch.exp(0.5 * log_var)).log_prob(x).sum(-1)
    assert torch.allclose(gaussian_log_prob(x, mean, log_var), expected, atol=1e-12)


def test_the_gaussian_decoders_likelihood_is_torchs_normal_with_its_clamped_variance():
    cfg = VAEConfig(image_size=4, likelihood="gaussian", latent_dim=2, hidden=8)
    model = VAE(cfg).double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    decoded = torch.rand(3, 16, dtype=torch.float64)  # the decoder's mean image, flattened
    with torch.no_grad():
        model.pixel_log_var.copy_(
            torch.linspace(-9, 1, 16).double().reshape_as(model.pixel_log_var)
        )
    log_var = model.pixel_log_var.detach().flatten().clamp(min=MIN_PIXEL_LOG_VAR)
    expected = td.Normal(decoded, torch.exp(0.5 * log_var)).log_prob(x.flatten(1)).sum(-1)
    torch.testing.assert_close(model.log_likelihood(x, decoded), expected, rtol=0, atol=1e-10)
    assert log_var.min() == MIN_PIXEL_LOG_VAR  # the lowest variances were clamped


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli", "gaussian"])
@pytest.mark.parametrize("n_classes", [0, 3])
def test_every_variant_has_the_documented_shapes(arch, likelihood, n_classes):
    cfg = VAEConfig(
        image_channels=3,
        image_size=8,
        arch=arch,
        likelihood=likelihood,
        latent_dim=5,
        hidden=16,
        n_classes=n_classes,
    )
    model = VAE(cfg)
    x = torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2]) if n_classes else None
    mu, log_var = model.encode(x, y)
    assert mu.shape == log_var.shape == (6, 5)
    recon, loss = model(x, y)
    assert recon.shape == (6, 3, 8, 8) and loss.shape == ()
    elbo, iwae = model.bounds(x, n_samples=7, y=y)
    assert elbo.shape == iwae.shape == (6,)
    assert model.sample(4, y[:4] if n_classes else None).shape == (4, 3, 8, 8)


def test_importance_weights_pair_each_sample_with_its_own_image_and_class():
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, hidden=16, n_classes=4)).double()
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.3, dtype=torch.float64))
    y = torch.tensor([2, 0, 3])
    torch.manual_seed(5)
    log_w, _, _ = model.importance_log_weights(x, 4, y)  # (4, 3)
    torch.manual_seed(5)
    mu, log_var = model.encode(x, y)
    z = reparameterize(mu.expand(4, 3, 3), log_var.expand(4, 3, 3))
    for s in range(4):
        for b in range(3):
            one_z, one_x, one_y = z[s, b : b + 1], x[b : b + 1], y[b : b + 1]
            zero = torch.zeros_like(one_z)
            expected = (
                model.log_likelihood(one_x, model.decode(one_z, one_y))
                + gaussian_log_prob(one_z, zero, zero)
                - gaussian_log_prob(one_z, mu[b : b + 1], log_var[b : b + 1])
            )
            assert torch.allclose(log_w[s, b], expected[0], atol=1e-10)


def test_iwae_tends_to_the_exact_log_likelihood_computed_by_quadrature():
    # With a 1-D latent, log p(x) = log int p(x|z) p(z) dz is a 1-D integral we can do on a grid.
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=1, hidden=16)).double()
    x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.3, dtype=torch.float64))
    grid = torch.linspace(-8, 8, 4001, dtype=torch.float64)[:, None]  # (G, 1)
    exact = []
    for image in x:
        log_px_z = model.log_likelihood(image.expand(len(grid), 1, 8, 8), model.decode(grid))
        log_joint = log_px_z + gaussian_log_prob(grid, 0 * grid, 0 * grid)  # (G,)
        step = float(grid[1, 0] - grid[0, 0])
        exact.append(torch.logsumexp(log_joint, 0) + math.log(step))
    exact = torch.stack(exact)
    elbo, iwae = model.bounds(x, n_samples=20_000)
    assert torch.all(elbo < exact)
    assert torch.allclose(iwae, exact, atol=0.02)


@pytest.fixture(scope="module")
def trained_digits_vae():
    """A small MLP VAE trained for a few seconds on binarised digits."""
    torch.manual_seed(0)
    x_train, _ = load_images("digits", "train")
    x_test, _ = load_images("digits", "test")
    x_train, x_test = torch.from_numpy(x_train), torch.from_numpy(x_test)
    model = VAE(VAEConfig(latent_dim=4, hidden=64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        batch = torch.bernoulli(x_train[torch.randint(len(x_train), (128,))])
        _, loss = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, torch.bernoulli(x_test[:100], generator=torch.Generator().manual_seed(0))


def test_elbo_is_below_iwae_and_iwae_does_not_decrease_with_k_on_a_trained_model(
    trained_digits_vae,
):
    model, x = trained_digits_vae
    torch.manual_seed(0)
    means = {}
    for k in (1, 10, 100):
        elbo, iwae = model.bounds(x, n_samples=k)
        means[k] = iwae.mean().item()
        if k == 100:
            means["elbo"] = elbo.mean().item()
    assert means["elbo"] < means[10] <= means[100]
    assert means[1] < means[10]
    assert abs(means[1] - means["elbo"]) < 0.5  # IWAE with one sample is the ELBO, in expectation


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path, trained_digits_vae):
    model, x = trained_digits_vae
    save_checkpoint(
        tmp_path / "model.pt", {"model": model.state_dict(), "config": asdict(model.cfg)}
    )
    ckpt = load_checkpoint(tmp_path / "model.pt", required=("model", "config"))
    rebuilt = VAE(VAEConfig(**ckpt["config"]))
    load_model_state(rebuilt, ckpt["model"], tmp_path / "model.pt")
    mu_a, log_var_a = model.encode(x)
    mu_b, log_var_b = rebuilt.encode(x)
    assert torch.equal(mu_a, mu_b) and torch.equal(log_var_a, log_var_b)
    z = torch.randn(3, 4)
    assert np.array_equal(model.decode(z).detach().numpy(), rebuilt.decode(z).detach().numpy())


def test_iwae_bound_averages_disjoint_groups_of_k_draws_a_hand_worked_case():
    # Weights w = 1, 3, 2, 6 for one image: IWAE_4 = log mean(w) = log 3; IWAE_2 averages the
    # groups (1, 3) and (2, 6): (log 2 + log 4) / 2 = 1.5 log 2; IWAE_1 = mean log w = log 36 / 4.
    log_w = torch.log(torch.tensor([[1.0], [3.0], [2.0], [6.0]], dtype=torch.float64))
    for k, expected in ((4, math.log(3)), (2, 1.5 * math.log(2)), (1, math.log(36) / 4)):
        assert abs(iwae_bound(log_w, k).item() - expected) < 1e-12, k
