"""bf16 autocast on the CPU: the softmax, the normalisations and the losses stay in float32."""

import pytest
import torch
from model import Attention, SDConfig, StableDiffusion

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def test_cross_attention_under_bf16_autocast_keeps_a_float32_softmax():
    torch.manual_seed(0)
    attention = Attention(32, 4, context_dim=24)
    x, context = torch.randn(2, 36, 32), torch.randn(2, 7, 24)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 3:] = False
    reference = attention(x, context, mask)
    q, k = torch.randn(2, 4, 36, 8), torch.randn(2, 4, 7, 8)
    with torch.autocast(**BF16):
        out = attention(x, context, mask)
        weights = attention.attention_weights(q.bfloat16(), k.bfloat16(), mask)
    assert out.dtype == torch.bfloat16  # the products did run in bf16
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 36), rtol=0, atol=1e-6)
    assert weights[0, :, :, 3:].abs().max() == 0  # padding still gets no attention
    torch.testing.assert_close(
        out.float(), reference, rtol=0, atol=0.02 * reference.abs().max().item()
    )


def test_the_losses_and_their_terms_under_bf16_autocast_are_float32_and_close_to_fp32():
    torch.manual_seed(0)
    cfg = SDConfig(ae_channels=16, unet_channels=16, vocab_size=20, max_tokens=6)
    model = StableDiffusion(cfg)
    images = (torch.rand(4, 1, 24, 24) > 0.7).float()
    ae_noise, noise = torch.randn(4, 4, 6, 6), torch.randn(4, 4, 6, 6)
    ids, mask = torch.randint(3, 20, (4, 6)), torch.ones(4, 6, dtype=torch.bool)
    t = torch.randint(0, cfg.timesteps, (4,))
    z0 = model.to_latent(images)

    def losses():  # the autoencoder's loss, reconstruction and KL, then the diffusion loss
        return (*model.autoencoder(images, 1e-3, ae_noise), model(z0, ids, mask, t, noise))

    fp32 = losses()
    with torch.autocast(**BF16):
        bf16 = losses()
    for low, full in zip(bf16, fp32):
        assert low.dtype == torch.float32 and low.item() != full.item()
        assert low.item() == pytest.approx(full.item(), rel=0.02)
