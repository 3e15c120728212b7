"""The diffusion process: closed forms against sampling, Bayes' rule and hand-worked values."""

import math

import pytest
import torch
from model import UNet, UNetConfig

from diffusion import GaussianDiffusion, cosine_betas, guided, linear_betas


def tiny_unet(num_classes=0, seed=0):
    torch.manual_seed(seed)
    cfg = UNetConfig(
        image_size=8,
        base_channels=8,
        channel_mults=(1, 2),
        attention_resolutions=(4,),
        num_heads=2,
        num_groups=4,
        num_classes=num_classes,
    )
    return UNet(cfg).eval()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_q_sample_empirical_mean_and_variance_match_the_closed_form(schedule):
    diffusion = GaussianDiffusion(T=100, schedule=schedule)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.7, -0.3], dtype=torch.float64)
    n = 200_000
    for t in (0, 10, 50, 99):
        noise = torch.randn(n, 2, dtype=torch.float64, generator=generator)
        xt = diffusion.q_sample(x0.expand(n, 2), torch.full((n,), t), noise)
        a = diffusion.alpha_bar[t]
        # q(x_t | x_0) = N(sqrt(alpha_bar) x_0, (1 - alpha_bar) I); 5 standard errors of slack.
        std_err = math.sqrt((1 - a) / n)
        assert torch.allclose(xt.mean(0), a.sqrt() * x0, atol=5 * std_err)
        assert torch.allclose(xt.var(0), (1 - a).expand(2), rtol=0.02)


def test_posterior_mean_and_variance_equal_bayes_rule_on_gaussians():
    diffusion = GaussianDiffusion(T=50, schedule="cosine")
    generator = torch.Generator().manual_seed(1)
    t = torch.arange(1, 50)
    x0 = torch.randn(49, 3, dtype=torch.float64, generator=generator)
    xt = torch.randn(49, 3, dtype=torch.float64, generator=generator)
    mean, var = diffusion.q_posterior(x0, xt, t)
    # Prior q(x_{t-1} | x_0) = N(sqrt(ab_{t-1}) x_0, 1 - ab_{t-1}); likelihood
    # q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t). Their product, as a Gaussian in
    # x_{t-1}: precisions add, and the mean is the precision-weighted sum of the two estimates.
    ab_prev = diffusion.alpha_bar[t - 1][:, None]
    alpha, beta = diffusion.alphas[t][:, None], diffusion.betas[t][:, None]
    precision = 1 / (1 - ab_prev) + alpha / beta
    expected_mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + alpha.sqrt() * xt / beta) / precision
    assert torch.allclose(var.expand_as(x0), (1 / precision).expand_as(x0), rtol=1e-12)
    assert torch.allclose(mean, expected_mean, rtol=1e-10, atol=1e-12)


def test_alpha_bar_of_both_schedules_at_known_points():
    # Linear, T = 1000: beta_t = 1e-4 + t (0.02 - 1e-4) / 999, so alpha_bar_0 = 1 - 1e-4 and
    # log alpha_bar_{T-1} = sum log(1 - beta_t), which we sum by hand in plain Python.
    betas = [1e-4 + t * (0.02 - 1e-4) / 999 for t in range(1000)]
    linear = GaussianDiffusion(T=1000, schedule="linear")
    assert linear.alpha_bar[0].item() == pytest.approx(1 - 1e-4, rel=1e-12)
    assert linear.alpha_bar[-1].item() == pytest.approx(
        math.exp(sum(math.log(1 - b) for b in betas)), rel=1e-9
    )
    assert linear.alpha_bar[-1].item() == pytest.approx(4.04e-5, rel=0.01)  # DDPM's value
    # Rescaling to T = 100 multiplies both ends by 10.
    assert torch.allclose(
        linear_betas(100)[[0, -1]], torch.tensor([1e-3, 0.2], dtype=torch.float64)
    )
    # Cosine: alpha_bar_t = f(t + 1) / f(0) with f(t) = cos((t/T + s) / (1 + s) pi / 2)^2.
    T, s = 1000, 0.008
    cosine = GaussianDiffusion(T=T, schedule="cosine")

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 249, 499, 749):
        assert cosine.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert cosine.alpha_bar[499].item() == pytest.approx(0.4938, abs=1e-3)  # near 1/2 halfway
    assert cosine_betas(T).max().item() == pytest.approx(0.999)  # clipped at the end


def test_ddim_with_eta_one_and_all_steps_is_the_ddpm_step():
    diffusion = GaussianDiffusion(T=40, schedule="linear")
    generator = torch.Generator().manual_seed(2)
    xt = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=generator)
    eps = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=generator)
    z = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=generator)
    assert diffusion.ddim_timesteps(40) == list(range(39, -1, -1))
    for t in (39, 20, 1):
        ddpm = diffusion.ddpm_step(eps, xt, t, z, variance="fixed_small", clip=False)
        ddim = diffusion.ddim_step(eps, xt, t, t - 1, z, eta=1.0)
        assert torch.allclose(ddim, ddpm, rtol=1e-10, atol=1e-12)
    # The last step (to the data) adds no noise in either.
    ddpm = diffusion.ddpm_step(eps, xt, 0, z, clip=False)
    assert torch.allclose(diffusion.ddim_step(eps, xt, 0, -1, z, eta=1.0), ddpm, atol=1e-12)


def test_ddim_with_eta_zero_is_deterministic_whatever_the_noise():
    model = tiny_unet()
    diffusion = GaussianDiffusion(T=100)
    generator = torch.Generator().manual_seed(0)
    a, _ = diffusion.sample(model, (3, 1, 8, 8), "ddim", 10, 0.0, generator=generator, clip=False)
    # Same x_T: the first draw of each generator is x_T; later draws differ and must not matter.
    xT = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    b = diffusion.ddim_decode(model, xT, 10)
    assert torch.allclose(a, b, atol=1e-6)


def test_ddim_encode_then_decode_returns_the_input():
    diffusion = GaussianDiffusion(T=100)
    unet = tiny_unet(seed=3)

    def model(x, t, y=None):
        # The exact noise predictor for N(0, I) data, sqrt(1 - alpha_bar_t) x_t, plus a small
        # random U-Net: a noise predictor as well-conditioned as a trained one, but not linear.
        return (1 - diffusion.alpha_bar[t]).sqrt().float().view(-1, 1, 1, 1) * x + 0.1 * unet(x, t)

    x0 = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    xT = diffusion.ddim_encode(model, x0, steps=100)
    back = diffusion.ddim_decode(model, xT, steps=100)
    assert (xT - x0).abs().max() > 0.3  # the encoding really went somewhere
    assert (back - x0).abs().max() < 0.06  # and decoding came back (first-order error)


def test_classifier_free_guidance_interpolates_and_extrapolates():
    generator = torch.Generator().manual_seed(5)
    conditional = torch.randn(6, generator=generator)
    unconditional = torch.randn(6, generator=generator)
    assert torch.equal(guided(conditional, unconditional, 0.0), unconditional)
    assert torch.allclose(guided(conditional, unconditional, 1.0), conditional)
    # w = 3: eps_u + 3 (eps_c - eps_u) = 3 eps_c - 2 eps_u
    assert torch.allclose(
        guided(conditional, unconditional, 3.0), 3 * conditional - 2 * unconditional
    )


def test_guided_sampling_calls_the_model_with_and_without_the_class():
    model = tiny_unet(num_classes=10)
    diffusion = GaussianDiffusion(T=50)
    x = torch.randn(2, 1, 8, 8)
    y = torch.tensor([3, 7])
    tt = torch.full((2,), 5)
    with torch.no_grad():
        expected = guided(model(x, tt, y), model(x, tt, None), 2.5)
        assert torch.allclose(diffusion._predict(model, x, 5, y, 2.5), expected, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_is_reproducible_by_seed(sampler):
    model = tiny_unet()
    diffusion = GaussianDiffusion(T=30)

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return diffusion.sample(model, (2, 1, 8, 8), sampler, 5, eta=0.5, generator=generator)[0]

    assert torch.equal(draw(0), draw(0))
    assert not torch.allclose(draw(0), draw(1))


def test_velocity_prediction_recovers_x0_and_eps_exactly():
    diffusion = GaussianDiffusion(T=100, prediction="v")
    generator = torch.Generator().manual_seed(6)
    x0 = torch.randn(5, 1, 4, 4, dtype=torch.float64, generator=generator)
    eps = torch.randn(5, 1, 4, 4, dtype=torch.float64, generator=generator)
    t = torch.tensor([0, 10, 50, 90, 99])
    xt = diffusion.q_sample(x0, t, eps)
    x0_hat, eps_hat = diffusion.predict_x0_eps(diffusion.velocity(x0, t, eps), xt, t)
    assert torch.allclose(x0_hat, x0, atol=1e-10)
    assert torch.allclose(eps_hat, eps, atol=1e-10)


def test_constants_stay_float64_and_follow_the_input_dtype():
    diffusion = GaussianDiffusion(T=100)
    assert diffusion.alpha_bar.dtype == torch.float64 and diffusion.alpha_bar.device.type == "cpu"
    t = torch.tensor([0, 50, 99])
    for dtype in (torch.float32, torch.float64):
        a = diffusion._at("alpha_bar", t, torch.zeros(3, 1, 2, 2, dtype=dtype))
        assert a.dtype == dtype and a.shape == (3, 1, 1, 1)
        assert torch.equal(a.flatten(), diffusion.alpha_bar[t].to(dtype))


def test_ddim_refuses_an_eta_above_one():
    diffusion = GaussianDiffusion(T=50)
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="eta"):
        diffusion.ddim_step(x, x, 40, 20, torch.zeros_like(x), eta=1.5)
