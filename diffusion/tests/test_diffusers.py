"""Our schedules, forward process and sampler steps against Hugging Face diffusers' schedulers.

diffusers is optional (the dev extra): without it these tests are skipped.
"""

import pytest
import torch
from model import timestep_embedding

from diffusion import GaussianDiffusion

diffusers = pytest.importorskip("diffusers")

T = 100


def reference(kind, schedule="linear", prediction="eps", **options):
    """A diffusers scheduler configured like our GaussianDiffusion(T, schedule, prediction)."""
    scale = 1000 / T  # our linear schedule is DDPM's, rescaled to T steps
    scheduler_cls = diffusers.DDPMScheduler if kind == "ddpm" else diffusers.DDIMScheduler
    return scheduler_cls(
        num_train_timesteps=T,
        beta_start=scale * 1e-4,
        beta_end=scale * 0.02,
        beta_schedule="linear" if schedule == "linear" else "squaredcos_cap_v2",
        prediction_type="epsilon" if prediction == "eps" else "v_prediction",
        **options,
    )


def with_our_float64_constants(scheduler, ours):
    """diffusers keeps its schedule in float32; give it ours so the steps compare in float64."""
    scheduler.betas, scheduler.alphas = ours.betas, ours.alphas
    scheduler.alphas_cumprod = ours.alpha_bar
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def tensors(seed, n=3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=generator) for _ in range(n)]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_match_diffusers(schedule):
    ours = GaussianDiffusion(T, schedule)
    theirs = reference("ddpm", schedule)
    assert torch.allclose(ours.betas.float(), theirs.betas, rtol=1e-5, atol=1e-7)
    assert torch.allclose(ours.alpha_bar.float(), theirs.alphas_cumprod, rtol=1e-4, atol=1e-7)


def test_q_sample_matches_diffusers_add_noise():
    ours = GaussianDiffusion(T, "cosine")
    theirs = with_our_float64_constants(reference("ddpm", "cosine"), ours)
    x0, noise, _ = tensors(0)
    t = torch.tensor([3, 77])
    assert torch.allclose(ours.q_sample(x0, t, noise), theirs.add_noise(x0, noise, t), atol=1e-12)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_one_ddpm_step_matches_diffusers(prediction, variance):
    ours = GaussianDiffusion(T, "linear", prediction)
    theirs = reference("ddpm", prediction=prediction, variance_type=variance, clip_sample=True)
    theirs = with_our_float64_constants(theirs, ours)
    model_output, xt, _ = tensors(1)
    for t in (T - 1, 40, 1, 0):
        # diffusers draws its noise from the generator as torch.randn would: the same z for both.
        z = torch.randn(xt.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(t))
        expected = theirs.step(
            model_output, t, xt, generator=torch.Generator().manual_seed(t)
        ).prev_sample
        got = ours.ddpm_step(model_output, xt, t, z, variance=variance, clip=True)
        assert torch.allclose(got, expected, atol=1e-12), t


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("clip", [False, True])
def test_one_ddim_step_matches_diffusers(prediction, eta, clip):
    ours = GaussianDiffusion(T, "cosine", prediction)
    theirs = reference("ddim", "cosine", prediction, clip_sample=clip, set_alpha_to_one=True)
    theirs = with_our_float64_constants(theirs, ours)
    theirs.set_timesteps(10)
    timesteps = ours.ddim_timesteps(10)
    assert timesteps == theirs.timesteps.tolist()  # the same "leading" spacing
    model_output, xt, z = tensors(2)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        # With clipping, diffusers re-derives eps from the clipped x_0 only when asked to.
        expected = theirs.step(
            model_output, t, xt, eta=eta, use_clipped_model_output=clip, variance_noise=z
        ).prev_sample
        got = ours.ddim_step(model_output, xt, t, t_prev, z, eta=eta, clip=clip)
        assert torch.allclose(got, expected, atol=1e-12), t


def test_time_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0, 1, 17, 500, 999])
    theirs = get_timestep_embedding(t, 32, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(timestep_embedding(t, 32), theirs, atol=1e-5)
