"""Under bf16 autocast (run here on the CPU) the products run in bf16 while the hand-written
softmax, LayerNorm statistics and losses stay in float32."""

import pytest
import torch
from model import (
    LayerNorm,
    MaskedLanguageModel,
    MultiHeadAttention,
    Seq2SeqTransformer,
    TransformerClassifier,
    TransformerConfig,
    label_smoothed_cross_entropy,
    padding_mask,
)


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_attention_weights_are_float32_under_bf16_autocast_and_close_to_float32():
    torch.manual_seed(0)
    attention = MultiHeadAttention(32, 4)
    x = torch.randn(3, 9, 32)
    mask = padding_mask(torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7]), 0)
    out32, w32 = attention(x, x, mask)
    with bf16():
        out16, w16 = attention(x, x, mask)
    assert out16.dtype == torch.bfloat16  # the projections and products did run in bf16
    assert w16.dtype == torch.float32
    assert torch.allclose(w16.sum(dim=-1), torch.ones(3, 4, 9), atol=1e-6)
    assert (w16.masked_select(~mask) == 0).all()  # padded keys: exactly no weight
    assert not torch.equal(w16, w32) and torch.allclose(w16, w32, atol=0.01)
    assert torch.allclose(out16.float(), out32, atol=0.01)


def test_layer_norm_statistics_are_float32_under_bf16_autocast():
    # An offset of 100 is where bf16's spacing is 0.5: a bf16 mean would be off by up to 0.25.
    torch.manual_seed(1)
    x = (100 + torch.randn(4, 64)).bfloat16()
    norm = LayerNorm(64)
    with bf16():
        y = norm(x)
    assert y.dtype == torch.float32
    exact = torch.nn.functional.layer_norm(x.double(), (64,))
    assert torch.allclose(y.double(), exact, atol=1e-5)


def test_label_smoothed_loss_is_float32_under_bf16_autocast():
    torch.manual_seed(2)
    logits = (4 * torch.randn(50, 40)).bfloat16()
    targets = torch.randint(1, 40, (50,))
    targets[::7] = 0  # padding
    with bf16():
        loss = label_smoothed_cross_entropy(logits, targets, 0.1, ignore_index=0)
    exact = label_smoothed_cross_entropy(logits.double(), targets, 0.1, ignore_index=0)
    assert loss.dtype == torch.float32 and abs(loss.item() - exact.item()) < 1e-5


def forward_loss(kind: str):
    torch.manual_seed(3)
    cfg = TransformerConfig(
        vocab_size=20, max_len=16, d_model=32, n_head=4, d_ff=64, dropout=0.0, n_classes=3
    )
    tokens = torch.randint(3, 20, (4, 12))
    tokens[1, 8:] = 0
    if kind == "translate":
        model = Seq2SeqTransformer(cfg)
        return lambda: model(tokens, tokens[:, :10], tokens[:, 1:11], label_smoothing=0.1)[1]
    if kind == "classify":
        model = TransformerClassifier(cfg)
        return lambda: model(tokens, torch.tensor([0, 1, 2, 1]))[1]
    model = MaskedLanguageModel(cfg)
    return lambda: model(tokens, torch.where(tokens % 4 == 0, tokens, 0))[1]


@pytest.mark.parametrize("kind", ["translate", "classify", "mlm"])
def test_every_model_s_bf16_loss_is_float32_and_close_to_its_float32_loss(kind):
    loss = forward_loss(kind)
    fp32 = loss()
    with bf16():
        mixed = loss()
    assert mixed.dtype == torch.float32
    assert mixed.item() != fp32.item() and mixed.item() == pytest.approx(fp32.item(), rel=0.02)
