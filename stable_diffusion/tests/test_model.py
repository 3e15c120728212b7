import pytest
import torch
from model import (
    Attention,
    Autoencoder,
    SDConfig,
    StableDiffusion,
    ddim_step,
    guided_noise,
    timestep_embedding,
)


@pytest.fixture(autouse=True)
def float64():
    """These tests compare against torch in float64; other test files keep float32."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


def copy_into_torch_mha(ours: Attention, dim, heads, context_dim):
    mha = torch.nn.MultiheadAttention(
        dim, heads, kdim=context_dim, vdim=context_dim, batch_first=True
    )
    with torch.no_grad():
        if context_dim == dim:
            mha.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        else:
            mha.q_proj_weight.copy_(ours.q.weight)
            mha.k_proj_weight.copy_(ours.k.weight)
            mha.v_proj_weight.copy_(ours.v.weight)
        mha.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        mha.out_proj.weight.copy_(ours.out.weight)
        mha.out_proj.bias.copy_(ours.out.bias)
    return mha


@pytest.mark.parametrize("context_dim", [16, 24])
def test_cross_attention_matches_torch_multihead_attention_with_kdim_vdim(context_dim):
    torch.manual_seed(0)
    dim, heads = 16, 4
    ours = Attention(dim, heads, context_dim=context_dim)
    theirs = copy_into_torch_mha(ours, dim, heads, context_dim)
    x = torch.randn(3, 10, dim, requires_grad=True)
    context = torch.randn(3, 7, context_dim, requires_grad=True)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 1:] = False
    out = ours(x, context, mask)
    ref, _ = theirs(x, context, context, key_padding_mask=~mask)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(out.sum(), [x, context, ours.q.weight, ours.k.weight])
    ref_grads = torch.autograd.grad(
        ref.sum(),
        [x, context]
        + (
            [theirs.q_proj_weight, theirs.k_proj_weight]
            if context_dim != dim
            else [theirs.in_proj_weight]
        ),
    )
    torch.testing.assert_close(grads[0], ref_grads[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads[1], ref_grads[1], rtol=0, atol=1e-12)
    if context_dim != dim:
        torch.testing.assert_close(grads[2], ref_grads[2], rtol=0, atol=1e-12)
        torch.testing.assert_close(grads[3], ref_grads[3], rtol=0, atol=1e-12)
    else:
        torch.testing.assert_close(
            torch.cat(grads[2:]), ref_grads[2][: 2 * dim], rtol=0, atol=1e-12
        )


def test_padding_tokens_receive_no_attention():
    torch.manual_seed(1)
    attention = Attention(8, 2, context_dim=8)
    x, context = torch.randn(2, 5, 8), torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 3 + [False] * 3, [True] * 6])
    changed = context.clone()
    changed[0, 3:] = torch.randn(3, 8) * 100  # whatever sits on padding must not matter
    torch.testing.assert_close(attention(x, context, mask), attention(x, changed, mask))
    changed[0, 2] += 1.0  # but a real token does
    assert not torch.allclose(attention(x, context, mask)[0], attention(x, changed, mask)[0])


def test_autoencoder_kl_matches_torch_distributions_and_shapes_are_quarter_size():
    torch.manual_seed(2)
    cfg = SDConfig(ae_channels=8)
    autoencoder = Autoencoder(cfg)
    x = torch.rand(3, 1, 24, 24)
    mean, log_var = autoencoder.encode(x)
    assert mean.shape == (3, cfg.latent_channels, 6, 6)
    assert autoencoder.decode(mean).shape == (3, 1, 24, 24)
    q = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).sum() / 3
    _, _, kl = autoencoder.loss(x, 1.0, noise=torch.randn_like(mean))
    torch.testing.assert_close(kl, expected)


def test_guidance_formula():
    conditional, unconditional = torch.randn(4), torch.randn(4)
    torch.testing.assert_close(guided_noise(conditional, unconditional, 0.0), unconditional)
    torch.testing.assert_close(guided_noise(conditional, unconditional, 1.0), conditional)
    torch.testing.assert_close(
        guided_noise(conditional, unconditional, 3.0),
        unconditional + 3.0 * (conditional - unconditional),
    )


def test_ddim_step_with_the_true_noise_lands_on_the_forward_process():
    z0, eps = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    a_t, a_prev = torch.tensor(0.3), torch.tensor(0.7)
    z_t = a_t.sqrt() * z0 + (1 - a_t).sqrt() * eps
    # eta = 0: x_prev = sqrt(a_prev) z0 + sqrt(1 - a_prev) eps exactly
    torch.testing.assert_close(
        ddim_step(z_t, eps, a_t, a_prev, eta=0.0), a_prev.sqrt() * z0 + (1 - a_prev).sqrt() * eps
    )
    # stepping to alpha_bar = 1 returns z0
    torch.testing.assert_close(ddim_step(z_t, eps, a_t, torch.tensor(1.0), eta=0.0), z0)


def test_ddim_with_eta_one_has_ddpm_posterior_variance():
    a_t, a_prev = torch.tensor(0.3), torch.tensor(0.7)
    z_t, eps = torch.zeros(1), torch.zeros(1)
    noise = torch.ones(1)
    sigma = ddim_step(z_t, eps, a_t, a_prev, eta=1.0, noise=noise)  # = sigma * 1
    beta_t = 1 - a_t / a_prev
    posterior_variance = (1 - a_prev) / (1 - a_t) * beta_t  # beta~_t of DDPM, eq. 7
    torch.testing.assert_close(sigma**2, posterior_variance.reshape(1))


def test_time_embeddings_differ_for_every_step():
    emb = timestep_embedding(torch.arange(1000), 32)
    assert torch.cdist(emb, emb).add(torch.eye(1000) * 1e9).min() > 1e-3


def small_model():
    torch.manual_seed(0)
    return StableDiffusion(SDConfig(ae_channels=8, unet_channels=16, vocab_size=20, max_tokens=6))


def test_an_autoencoder_step_reduces_its_loss_on_a_fixed_batch():
    model = small_model()
    x = (torch.rand(8, 1, 24, 24) > 0.7).double()
    optimizer = torch.optim.Adam(model.autoencoder.parameters(), lr=1e-3)
    losses = []
    noise = torch.randn(8, 4, 6, 6)  # the same reparameterisation noise every step
    for _ in range(15):
        loss = model.autoencoder.loss(x, 1e-3, noise)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_a_diffusion_step_reduces_its_loss_on_a_fixed_batch():
    model = small_model()
    z0 = torch.randn(8, 4, 6, 6)
    ids = torch.randint(3, 20, (8, 6))
    mask = torch.ones(8, 6, dtype=torch.bool)
    params = [*model.unet.parameters(), *model.text_encoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    losses = []
    t, noise = torch.randint(0, 1000, (8,)), torch.randn(8, 4, 6, 6)  # the same every step
    for _ in range(15):
        loss = model.diffusion_loss(z0, ids, mask, t, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_sampling_is_reproducible_by_seed_and_image_to_image_keeps_shapes():
    model = small_model().eval()
    ids = torch.randint(3, 20, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)

    def run(**kwargs):
        generator = torch.Generator().manual_seed(0)
        return model.sample(ids, mask, ids, mask, steps=3, generator=generator, **kwargs)

    torch.testing.assert_close(run(), run())
    other = model.sample(ids, mask, ids, mask, steps=3, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(run(), other)


def test_image_to_image_strength_decides_how_much_of_the_picture_is_kept():
    model = small_model().eval()
    ids = torch.randint(3, 20, (4, 6))
    mask = torch.ones(4, 6, dtype=torch.bool)
    init = torch.randn(4, 4, 6, 6)
    picture = model.to_image(init).clamp(0, 1)

    def distance(strength):
        out = model.sample(
            ids,
            mask,
            ids,
            mask,
            steps=20,
            init_latents=init,
            strength=strength,
            generator=torch.Generator().manual_seed(0),
        )
        return (out - picture).abs().mean().item()

    low, middle, high = distance(0.02), distance(0.5), distance(1.0)
    assert low < 0.25 * high and low < middle


def test_a_negative_prompt_acts_only_through_guidance():
    model = small_model().eval()
    ids, empty = torch.randint(3, 20, (2, 6)), torch.randint(3, 20, (2, 6))
    negative = torch.randint(3, 20, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)

    def run(uncond, guidance):
        generator = torch.Generator().manual_seed(0)
        return model.sample(ids, mask, uncond, mask, guidance, steps=3, generator=generator)

    # w = 1 is the conditional model alone: what it is contrasted with cannot matter.
    torch.testing.assert_close(run(empty, 1.0), run(negative, 1.0))
    assert (run(empty, 3.0) - run(negative, 3.0)).abs().max() > 1e-3
