"""The U-Net and its parts: shapes, the time embedding, attention against torch, learning."""

import pytest
import torch
import torch.nn as nn
from model import (
    EMA,
    GroupNorm32,
    SelfAttention,
    UNet,
    UNetConfig,
    attention_weights,
    timestep_embedding,
)

from diffusion import GaussianDiffusion


@pytest.mark.parametrize(
    "image_size, channels, mults, attention, classes",
    [(8, 1, (1, 2), (4,), 0), (16, 1, (1, 2, 2), (8, 4), 10), (32, 3, (1, 1, 2, 2), (8,), 3)],
)
def test_unet_output_has_the_input_shape_for_several_sizes(
    image_size, channels, mults, attention, classes
):
    cfg = UNetConfig(
        image_size=image_size,
        in_channels=channels,
        base_channels=8,
        channel_mults=mults,
        attention_resolutions=attention,
        num_heads=2,
        num_groups=4,
        num_classes=classes,
    )
    model = UNet(cfg)
    x = torch.randn(2, channels, image_size, image_size)
    y = torch.tensor([0, -1]) if classes else None
    assert model(x, torch.tensor([0, 999]), y).shape == x.shape


def test_unet_forward_equals_the_u_net_assembled_by_hand_skip_by_skip():
    # Two levels (8x8 with 8 channels, 4x4 with 16) of two blocks: six skips, three of them of
    # the same shape (8, 8x8) and two of another (16, 4x4), so a skip joined to the wrong
    # decoder block, or taken before its attention, changes the values and not only a shape.
    torch.manual_seed(0)
    model = UNet(UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2),
                            num_res_blocks=2, attention_resolutions=(4,), num_heads=2,
                            num_groups=4, num_classes=3)).eval()  # fmt: skip
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 700]), torch.tensor([2, -1])
    with torch.no_grad():
        emb = model.time_embed(t) + model.class_embed(torch.tensor([2, 3]))  # 3: "no class"
        down0, down1 = model.down
        s0 = model.stem(x)  # (2, 8, 8, 8)
        s1 = down0.blocks[0](s0, emb)  # no attention at 8x8
        s2 = down0.blocks[1](s1, emb)
        s3 = model.downsample[0](s2)  # (2, 8, 4, 4)
        s4 = down1.attention[0](down1.blocks[0](s3, emb))  # (2, 16, 4, 4)
        s5 = down1.attention[1](down1.blocks[1](s4, emb))
        h = model.mid_block2(model.mid_attention(model.mid_block1(s5, emb)), emb)
        up1, up0 = model.up  # the deepest level first
        for block, attn, skip in zip(up1.blocks, up1.attention, (s5, s4, s3)):
            h = attn(block(torch.cat([h, skip], dim=1), emb))
        h = model.upsample[0](h)  # (2, 16, 8, 8)
        for block, skip in zip(up0.blocks, (s2, s1, s0)):
            h = block(torch.cat([h, skip], dim=1), emb)
        expected = model.out_conv(torch.nn.functional.silu(model.out_norm(h)))
        assert torch.allclose(model(x, t, y), expected, atol=1e-6)


def test_unet_rejects_a_size_that_does_not_halve_enough():
    with pytest.raises(ValueError, match="does not halve"):
        UNet(UNetConfig(image_size=12, channel_mults=(1, 2, 2, 2)))


def test_time_embedding_is_distinct_for_every_step_and_follows_the_formula():
    t = torch.arange(1000)
    emb = timestep_embedding(t, 32).double()  # (1000, 32)
    distances = torch.cdist(emb, emb) + torch.eye(1000) * 1e9
    assert distances.min() > 1e-3  # no two steps share an embedding
    # Hand-worked entries: column 0 is cos(t * 1), column 16 is sin(t * 1),
    # column 1 is cos(t * 10000^(-1/16)).
    assert torch.allclose(emb[:, 0], torch.cos(t.double()), atol=1e-6)
    assert torch.allclose(emb[:, 16], torch.sin(t.double()), atol=1e-6)
    assert torch.allclose(emb[:, 1], torch.cos(t.double() * 10000 ** (-1 / 16)), atol=1e-5)


def test_self_attention_matches_torch_multihead_attention_forward_and_gradients():
    torch.manual_seed(0)
    C, heads = 8, 2
    ours = SelfAttention(C, heads, groups=4).double()
    reference = nn.MultiheadAttention(C, heads, batch_first=True).double()
    with torch.no_grad():
        reference.in_proj_weight.copy_(ours.qkv.weight)  # rows: W_q, W_k, W_v stacked
        reference.in_proj_bias.copy_(ours.qkv.bias)
        reference.out_proj.weight.copy_(ours.proj.weight)
        reference.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, C, 4, 4, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = ours(x)

    tokens = ours.norm(x_ref).flatten(2).transpose(1, 2)  # (B, N, C): the same GroupNorm
    attended, _ = reference(tokens, tokens, tokens, need_weights=False)
    expected = x_ref + attended.transpose(1, 2).reshape(x.shape)
    assert torch.allclose(out, expected, atol=1e-12)

    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    expected.backward(grad_out)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-12)
    assert torch.allclose(ours.qkv.weight.grad, reference.in_proj_weight.grad, atol=1e-12)
    assert torch.allclose(ours.proj.weight.grad, reference.out_proj.weight.grad, atol=1e-12)


def test_class_label_changes_the_output_and_minus_one_means_no_class():
    torch.manual_seed(0)
    model = UNet(UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), num_heads=2,
                            num_groups=4, num_classes=10))  # fmt: skip
    with torch.no_grad():  # a fresh model's class embeddings are random, so labels matter
        x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 5])
        assert not torch.allclose(
            model(x, t, torch.tensor([1, 1])), model(x, t, torch.tensor([2, 2]))
        )
        assert torch.equal(model(x, t, torch.tensor([-1, -1])), model(x, t, None))


def test_a_training_step_on_a_fixed_batch_reduces_the_loss():
    torch.manual_seed(0)
    model = UNet(UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), num_heads=2,
                            num_groups=4))  # fmt: skip
    diffusion = GaussianDiffusion(T=100)
    x0 = torch.rand(8, 1, 8, 8) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_on_fixed_noise():  # the same t and eps every time, so only the weights change
        return diffusion.loss(model, x0, generator=torch.Generator().manual_seed(1))

    before = loss_on_fixed_noise()
    for _ in range(3):
        optimizer.zero_grad()
        loss_on_fixed_noise().backward()
        optimizer.step()
    assert loss_on_fixed_noise().item() < 0.9 * before.item()


def test_ema_matches_diffusers_ema_model_with_its_warm_up():
    EMAModel = pytest.importorskip("diffusers.training_utils").EMAModel
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    ema = EMA(model, decay=0.9)
    reference = EMAModel(model.parameters(), decay=0.9)  # d_n = min(0.9, (1 + n) / (10 + n))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(100):  # past n = 80, where (1 + n) / (10 + n) reaches the cap 0.9
        optimizer.zero_grad()
        model(torch.randn(8, 3)).pow(2).mean().backward()
        optimizer.step()
        ema.update(model, step)
        reference.step(model.parameters())
    averaged = [ema.state_dict()[name] for name, _ in model.named_parameters()]
    for mine, theirs in zip(averaged, reference.shadow_params, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
    assert ema.decay_at(0) == 0.0 and ema.decay_at(1) == 2 / 11 and ema.decay_at(10**6) == 0.9


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_group_norm_statistics_stay_float32_under_bf16_autocast():
    # A bf16 feature map far from zero, as a convolution under autocast hands it on: normalised
    # in float32, each group has mean 0 and variance 1 to float32's precision; a result held in
    # bf16 (8-bit mantissa) would be off by about 4e-3.
    torch.manual_seed(0)
    x = (5 + 3 * torch.randn(2, 16, 8, 8)).to(torch.bfloat16)
    norm = GroupNorm32(4, 16)  # gamma = 1, beta = 0
    with bf16_autocast():
        out = norm(x)
    assert out.dtype == torch.float32
    groups = out.view(2, 4, -1)
    assert groups.mean(-1).abs().max() < 1e-5
    assert (groups.var(-1, unbiased=False) - 1).abs().max() < 1e-4
    expected = nn.functional.group_norm(x.float(), 4, eps=norm.eps)
    assert torch.allclose(out, expected, atol=1e-6)


def test_attention_softmax_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    q, k = (torch.randn(2, 2, 16, 8).to(torch.bfloat16) for _ in range(2))  # (B, h, N, d)
    with bf16_autocast():
        weights = attention_weights(q, k)
    assert weights.dtype == torch.float32
    assert (weights.sum(-1) - 1).abs().max() < 1e-6  # bf16 weights: off by about 1e-3
    scores = (q @ k.transpose(-2, -1)) / 8**0.5  # the bf16 product, then softmax in float32
    assert torch.allclose(weights, scores.float().softmax(-1), atol=1e-7)


def test_unet_under_bf16_autocast_normalises_in_float32_and_stays_close_to_float32():
    torch.manual_seed(0)
    model = UNet(UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), num_heads=2,
                            attention_resolutions=(4,), num_groups=4, num_classes=3))  # fmt: skip
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 500, 999]), torch.tensor([0, 1, 2, -1])
    norms = [module for module in model.modules() if isinstance(module, nn.GroupNorm)]
    norm_dtypes = []
    for norm in norms:
        norm.register_forward_hook(lambda m, args, out: norm_dtypes.append(out.dtype))
    with torch.no_grad():
        fp32 = model(x, t, y)
        norm_dtypes.clear()
        with bf16_autocast():
            bf16 = model(x, t, y)
    assert bf16.dtype == torch.bfloat16  # autocast ran the convolutions in bf16
    assert len(norm_dtypes) == len(norms) == 21 and set(norm_dtypes) == {torch.float32}
    relative = ((bf16.float() - fp32).norm() / fp32.norm()).item()
    assert 0 < relative < 0.02  # measured: 0.008
    # The loss is float32 too, and close to float32's on the same t and noise.
    diffusion, x0 = GaussianDiffusion(T=50), torch.rand(4, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        loss32 = diffusion.loss(model, x0, y, torch.Generator().manual_seed(3))
        with bf16_autocast():
            loss16 = diffusion.loss(model, x0, y, torch.Generator().manual_seed(3))
    assert loss16.dtype == torch.float32 and loss16.item() == pytest.approx(loss32.item(), rel=1e-2)
