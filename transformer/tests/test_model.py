"""Our hand-written transformer against PyTorch's own modules, with the same weights (float64)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from model import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    LayerNorm,
    MultiHeadAttention,
    Seq2SeqTransformer,
    SinusoidalPositionalEncoding,
    TransformerClassifier,
    TransformerConfig,
    causal_mask,
    label_smoothed_cross_entropy,
    mask_tokens,
    padding_mask,
)

C, H, FF = 16, 4, 32


def tiny_config(**overrides) -> TransformerConfig:
    settings = dict(
        vocab_size=11,
        max_len=32,
        d_model=C,
        n_head=H,
        d_ff=FF,
        n_encoder_layers=2,
        n_decoder_layers=2,
        dropout=0.0,
    )
    settings.update(overrides)
    return TransformerConfig(**settings)


def copy_attention(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        theirs.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)


def copy_linear_and_norms(ours, theirs, norms: int) -> None:
    with torch.no_grad():
        for name in ("linear1", "linear2"):
            getattr(theirs, name).weight.copy_(getattr(ours.ff, name).weight)
            getattr(theirs, name).bias.copy_(getattr(ours.ff, name).bias)
        for i in range(1, norms + 1):
            for attr in ("weight", "bias"):
                value = torch.randn_like(getattr(getattr(ours, f"norm{i}"), attr))
                getattr(getattr(ours, f"norm{i}"), attr).copy_(value)  # not the trivial 1, 0
                getattr(getattr(theirs, f"norm{i}"), attr).copy_(value)


def copy_encoder_layer(ours: EncoderLayer, theirs: nn.TransformerEncoderLayer) -> None:
    copy_attention(ours.self_attn, theirs.self_attn)
    copy_linear_and_norms(ours, theirs, norms=2)


def copy_decoder_layer(ours: DecoderLayer, theirs: nn.TransformerDecoderLayer) -> None:
    copy_attention(ours.self_attn, theirs.self_attn)
    copy_attention(ours.cross_attn, theirs.multihead_attn)
    copy_linear_and_norms(ours, theirs, norms=3)


def torch_layer(kind, norm_first=False):
    # train() keeps torch off its fused inference fast path; dropout 0 makes it deterministic.
    layer = kind(C, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    return layer.double().train()


def key_padding(lengths, L):
    """(B, L) True at padding (torch's convention) from the true lengths."""
    return torch.arange(L)[None, :] >= torch.tensor(lengths)[:, None]


def assert_same_grads(ours: nn.Module, theirs_grads: dict[str, torch.Tensor], atol=1e-10):
    for name, grad in theirs_grads.items():
        assert torch.allclose(dict(ours.named_parameters())[name].grad, grad, atol=atol), name


def test_multi_head_attention_matches_torch_forward_and_gradients():
    torch.manual_seed(0)
    ours = MultiHeadAttention(C, H).double()
    theirs = nn.MultiheadAttention(C, H, batch_first=True).double()
    copy_attention(ours, theirs)
    q = torch.randn(3, 5, C, dtype=torch.float64, requires_grad=True)
    kv = torch.randn(3, 7, C, dtype=torch.float64, requires_grad=True)
    pad = key_padding([7, 4, 2], 7)  # (B, S)
    out, w = ours(q, kv, mask=~pad[:, None, None, :])
    ref, ref_w = theirs(q, kv, kv, key_padding_mask=pad, average_attn_weights=False)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(w, ref_w, atol=1e-12)
    grad_out = torch.randn_like(out)
    dq, dkv = torch.autograd.grad(out, (q, kv), grad_out)
    ref_dq, ref_dkv = torch.autograd.grad(ref, (q, kv), grad_out)
    assert torch.allclose(dq, ref_dq, atol=1e-12)
    assert torch.allclose(dkv, ref_dkv, atol=1e-12)


def test_fused_attention_option_equals_hand_written_attention():
    torch.manual_seed(1)
    ours = MultiHeadAttention(C, H).double()
    fused = MultiHeadAttention(C, H, fused=True).double()
    fused.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, C, dtype=torch.float64)
    mask = causal_mask(6)
    assert torch.allclose(ours(x, x, mask)[0], fused(x, x, mask)[0], atol=1e-12)


def test_the_key_bias_changes_no_output_and_gets_no_gradient():
    # q . (k + b) = q . k + q . b: the key bias adds the same number to every score of a query,
    # which the softmax ignores. Its gradient is zero but for rounding, which Adam (a step of
    # about lr whatever the gradient's size) turns into full steps that change nothing.
    torch.manual_seed(3)
    attention = MultiHeadAttention(C, H).double()
    x = torch.randn(2, 6, C, dtype=torch.float64)
    kv = torch.randn(2, 5, C, dtype=torch.float64)
    mask = ~key_padding([5, 3], 5)[:, None, None, :]
    before = attention(x, kv, mask)[0]
    before.square().sum().backward()
    key_bias = attention.k_proj.bias
    assert key_bias.grad.abs().max() < 1e-12 < attention.q_proj.bias.grad.abs().max()
    with torch.no_grad():
        key_bias.add_(torch.randn_like(key_bias))
    assert torch.allclose(attention(x, kv, mask)[0], before, atol=1e-12)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch_transformer_encoder_layer(norm_first):
    torch.manual_seed(2)
    ours = EncoderLayer(tiny_config(norm_first=norm_first)).double()
    theirs = torch_layer(nn.TransformerEncoderLayer, norm_first)
    copy_encoder_layer(ours, theirs)
    x = torch.randn(3, 6, C, dtype=torch.float64, requires_grad=True)
    pad = key_padding([6, 3, 5], 6)
    out, _ = ours(x, ~pad[:, None, None, :])
    ref = theirs(x, src_key_padding_mask=pad)
    assert torch.allclose(out, ref, atol=1e-12)
    (dx,) = torch.autograd.grad((out * out).sum(), x)
    (ref_dx,) = torch.autograd.grad((ref * ref).sum(), x)
    assert torch.allclose(dx, ref_dx, atol=1e-10)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch_transformer_decoder_layer(norm_first):
    torch.manual_seed(3)
    ours = DecoderLayer(tiny_config(norm_first=norm_first)).double()
    theirs = torch_layer(nn.TransformerDecoderLayer, norm_first)
    copy_decoder_layer(ours, theirs)
    y = torch.randn(2, 5, C, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(2, 7, C, dtype=torch.float64, requires_grad=True)
    tgt_pad, mem_pad = key_padding([5, 3], 5), key_padding([7, 4], 7)
    self_mask = causal_mask(5) & ~tgt_pad[:, None, None, :]
    out, _, _ = ours(y, memory, self_mask, ~mem_pad[:, None, None, :])
    ref = theirs(
        y,
        memory,
        tgt_mask=~causal_mask(5)[0, 0],
        tgt_key_padding_mask=tgt_pad,
        memory_key_padding_mask=mem_pad,
    )
    assert torch.allclose(out, ref, atol=1e-12)
    dy, dm = torch.autograd.grad(out.sum(), (y, memory))
    ref_dy, ref_dm = torch.autograd.grad(ref.sum(), (y, memory))
    assert torch.allclose(dy, ref_dy, atol=1e-10)
    assert torch.allclose(dm, ref_dm, atol=1e-10)


def test_encoder_and_decoder_stacks_match_torch_with_the_same_weights_and_gradients():
    torch.manual_seed(4)
    cfg = tiny_config()
    encoder, decoder = Encoder(cfg).double(), Decoder(cfg).double()
    torch_encoder = nn.TransformerEncoder(
        torch_layer(nn.TransformerEncoderLayer), 2, enable_nested_tensor=False
    ).train()
    torch_decoder = nn.TransformerDecoder(torch_layer(nn.TransformerDecoderLayer), 2).train()
    for ours, theirs in zip(encoder.layers, torch_encoder.layers):
        copy_encoder_layer(ours, theirs)
    for ours, theirs in zip(decoder.layers, torch_decoder.layers):
        copy_decoder_layer(ours, theirs)
    src = torch.randn(2, 7, C, dtype=torch.float64)
    tgt = torch.randn(2, 5, C, dtype=torch.float64)
    src_pad = key_padding([7, 5], 7)
    memory, _ = encoder(src, ~src_pad[:, None, None, :])
    out, _, _ = decoder(tgt, memory, causal_mask(5), ~src_pad[:, None, None, :])
    ref_memory = torch_encoder(src, src_key_padding_mask=src_pad)
    ref = torch_decoder(
        tgt, ref_memory, tgt_mask=~causal_mask(5)[0, 0], memory_key_padding_mask=src_pad
    )
    assert torch.allclose(out, ref, atol=1e-12)
    out.square().sum().backward()
    ref.square().sum().backward()
    torch_names = {
        "self_attn.out_proj.weight": "self_attn.out_proj.weight",
        "cross_attn.out_proj.weight": "multihead_attn.out_proj.weight",
        "ff.linear1.weight": "linear1.weight",
        "norm3.bias": "norm3.bias",
    }
    for i in range(2):
        grads = {
            f"layers.{i}.{ours}": dict(torch_decoder.layers[i].named_parameters())[theirs].grad
            for ours, theirs in torch_names.items()
        }
        assert_same_grads(decoder, grads)
        q_grad = torch_encoder.layers[i].self_attn.in_proj_weight.grad[:C]  # W^Q's rows
        assert torch.allclose(encoder.layers[i].self_attn.q_proj.weight.grad, q_grad, atol=1e-10)


def test_sinusoidal_encoding_matches_the_papers_formula():
    pe = SinusoidalPositionalEncoding(50, 8).pe
    for pos in (0, 7, 49):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_label_smoothed_loss_matches_torch_cross_entropy_with_ignore_index():
    torch.manual_seed(5)
    logits = torch.randn(9, 11, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([3, 0, 5, 0, 1, 10, 2, 0, 7])  # 0 is padding
    ours = label_smoothed_cross_entropy(logits, targets, 0.1, ignore_index=0)
    ref = F.cross_entropy(logits, targets, ignore_index=0, label_smoothing=0.1)
    assert torch.allclose(ours, ref, atol=1e-12)
    (g,) = torch.autograd.grad(ours, logits)
    (ref_g,) = torch.autograd.grad(ref, logits)
    assert torch.allclose(g, ref_g, atol=1e-12)


def test_padding_mask_marks_real_tokens():
    tokens = torch.tensor([[4, 5, 0], [6, 0, 0]])
    expected = torch.tensor([[True, True, False], [True, False, False]])
    assert torch.equal(padding_mask(tokens, 0)[:, 0, 0], expected)


def test_classifier_pools_only_real_tokens():
    torch.manual_seed(6)
    model = TransformerClassifier(tiny_config(n_classes=5)).double().eval()
    tokens = torch.tensor([[3, 4, 5, 6]])
    padded = torch.tensor([[3, 4, 5, 6, 0, 0, 0]])
    assert torch.allclose(model(tokens)[0], model(padded)[0], atol=1e-12)


@pytest.mark.parametrize("share", [True, False])
def test_shared_embeddings_tie_source_target_and_output_only_when_asked(share):
    model = Seq2SeqTransformer(tiny_config(share_embeddings=share))
    tied = model.src_embed.weight is model.tgt_embed.weight is model.out_proj.weight
    assert tied == share


def test_layer_norm_matches_torch_forward_and_gradients():
    torch.manual_seed(8)
    ours, theirs = LayerNorm(C).double(), nn.LayerNorm(C).double()
    with torch.no_grad():  # not the trivial gamma 1, beta 0
        ours.weight.copy_(torch.randn(C))
        ours.bias.copy_(torch.randn(C))
    theirs.load_state_dict(ours.state_dict())
    x = (3 * torch.randn(2, 5, C, dtype=torch.float64) + 2).requires_grad_()
    out, ref = ours(x), theirs(x)
    assert torch.allclose(out, ref, atol=1e-12)
    grad_out = torch.randn_like(out)
    dx, dw, db = torch.autograd.grad(out, (x, ours.weight, ours.bias), grad_out)
    ref_dx, ref_dw, ref_db = torch.autograd.grad(ref, (x, theirs.weight, theirs.bias), grad_out)
    for a, b in ((dx, ref_dx), (dw, ref_dw), (db, ref_db)):
        assert torch.allclose(a, b, atol=1e-10)


def test_the_model_normalises_with_the_hand_written_layer_norm():
    model = Seq2SeqTransformer(tiny_config(norm_first=True))
    norms = [m for m in model.modules() if isinstance(m, (LayerNorm, nn.LayerNorm))]
    assert len(norms) == 2 * 2 + 3 * 2 + 2 and all(type(m) is LayerNorm for m in norms)


def test_masking_selects_15_percent_of_real_tokens_then_masks_80_randomises_10_keeps_10():
    V, first, mask_id, pad = 30, 3, 1, 0
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(first, V, (400, 500), generator=g)
    tokens[:, 400:] = pad  # a fifth is padding: never selected
    corrupted, targets = mask_tokens(tokens, g, first, mask_id, V, pad)
    selected = targets != pad
    assert not selected[:, 400:].any() and torch.equal(corrupted[:, 400:], tokens[:, 400:])
    assert torch.equal(targets[selected], tokens[selected])
    assert torch.equal(corrupted[~selected], tokens[~selected])  # only the selected change
    n_real, n = 400 * 400, int(selected.sum())
    masked = corrupted[selected] == mask_id
    kept = corrupted[selected] == tokens[selected]
    randomised = ~masked & ~kept
    chars = V - first  # a random replacement is the original character 1 time in `chars`
    for share, expected, count in (
        (n / n_real, 0.15, n_real),
        (masked.float().mean().item(), 0.8, n),
        (kept.float().mean().item(), 0.1 + 0.1 / chars, n),
        (randomised.float().mean().item(), 0.1 * (1 - 1 / chars), n),
    ):
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / count)
    replaced = corrupted[selected][randomised]
    assert replaced.min() >= first and replaced.max() < V  # never pad, bos, eos or [MASK]
