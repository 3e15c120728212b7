import math

import pytest
import torch
from model import (
    GPT,
    MLP,
    GPTConfig,
    KVCache,
    from_pretrained,
    load_hf_state_dict,
    preset_config,
    sample_next,
)

TINY = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=4, n_embd=32)


def tiny_model(**overrides) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY.__dict__, **overrides})).double()
    # Random LayerNorm gains and biases too, so that every parameter matters in comparisons.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(
                    torch.randn_like(p) * 0.5 + (1.0 if "ln" in name and "weight" in name else 0)
                )
    return model.eval()


def test_gpt2_config_has_exactly_124_439_808_parameters():
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(preset_config("gpt2"))
    assert model.num_params() == 124_439_808


def test_lm_head_is_tied_to_the_token_embedding():
    model = GPT(TINY)
    assert model.lm_head.weight is model.wte.weight


def test_residual_projections_start_with_std_002_over_sqrt_2_n_layer():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=8, n_layer=8, n_head=4, n_embd=256)
    model = GPT(config)
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.h])
    other = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.h])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.02)
    assert other.std().item() == pytest.approx(0.02, rel=0.02)


def test_mlp_gelu_is_gpt2s_tanh_formula_or_the_exact_x_times_normal_cdf():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    formulas = {
        "tanh": lambda h: (
            0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        ),
        "exact": lambda h: h * 0.5 * (1 + torch.erf(h / math.sqrt(2))),  # x Phi(x)
    }
    for gelu, formula in formulas.items():
        mlp = MLP(GPTConfig(n_embd=8, gelu=gelu)).double()
        expected = mlp.c_proj(formula(mlp.c_fc(x)))
        assert torch.allclose(mlp(x), expected, atol=1e-12), gelu


def test_changing_token_t_changes_no_logit_before_t():
    model = tiny_model()
    idx = torch.randint(TINY.vocab_size, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (idx[:, 7] + 1) % TINY.vocab_size
    before, _ = model(idx)
    after, _ = model(changed)
    assert torch.equal(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_fused_attention_matches_written_out_attention_forward_and_gradients():
    written, fused = tiny_model(), tiny_model(fused_attention=True)
    idx = torch.randint(TINY.vocab_size, (3, 16))
    targets = torch.randint(TINY.vocab_size, (3, 16))
    logits_w, loss_w = written(idx, targets)
    logits_f, loss_f = fused(idx, targets)
    loss_w.backward()
    loss_f.backward()
    assert torch.allclose(logits_w, logits_f, atol=1e-12)
    for (name, pw), pf in zip(written.named_parameters(), fused.parameters()):
        assert torch.allclose(pw.grad, pf.grad, atol=1e-12), name


def test_kv_cache_logits_equal_full_recompute_over_a_whole_generation():
    model = tiny_model()
    prompt = torch.randint(TINY.vocab_size, (2, 3))
    cache = KVCache(TINY.n_layer)
    logits, _ = model(prompt, cache=cache)
    step_logits, idx = [logits], prompt
    while idx.size(1) < TINY.block_size:  # a whole context, one token at a time
        next_token = logits[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, next_token], dim=1)
        logits, _ = model(next_token, cache=cache)
        step_logits.append(logits)
    full, _ = model(idx)
    assert torch.allclose(torch.cat(step_logits, dim=1), full, atol=1e-12)


def context_sensitive_model() -> GPT:
    """A random model whose next token depends on the whole context: with GPT-2's 0.02 init
    the LayerNorm biases decide every greedy token alone, and any two samplers agree."""
    model = tiny_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def sample_by_definition(model, idx, n_new, generator=None, **sampling):
    """The plain definition of sampling: each token from the last block_size tokens."""
    for _ in range(n_new):
        logits, _ = model(idx[:, -model.config.block_size :])
        next_token = sample_next(logits[:, -1], generator=generator, **sampling)
        idx = torch.cat([idx, next_token], dim=1)
    return idx


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.5, top_k=10)])
def test_stream_past_block_size_gives_the_tokens_of_the_definition(use_cache, sampling):
    # 4 + 40 tokens: the window slides 28 times past block_size 16.
    model = context_sensitive_model()
    prompt = torch.randint(TINY.vocab_size, (2, 4))
    expected = sample_by_definition(
        model, prompt, 40, generator=torch.Generator().manual_seed(1), **sampling
    )
    g = torch.Generator().manual_seed(1)
    streamed = model.stream(prompt, 40, use_cache=use_cache, generator=g, **sampling)
    assert torch.equal(torch.cat([prompt, *streamed], dim=1), expected)


def test_a_prompt_longer_than_block_size_is_cropped_to_its_last_block_size_tokens():
    model = context_sensitive_model()
    prompt = torch.randint(TINY.vocab_size, (1, 3 * TINY.block_size))
    cached = model.generate(prompt, 8, temperature=0, use_cache=True)
    assert torch.equal(cached, sample_by_definition(model, prompt, 8, temperature=0))


def test_top_k_and_top_p_keep_only_the_hand_worked_tokens():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    g = torch.Generator().manual_seed(0)
    seen_k = {sample_next(probs.log(), top_k=2, generator=g).item() for _ in range(300)}
    # top_p 0.7: 0.5 alone is short of 0.7, 0.5 + 0.3 reaches it; 0.15 and 0.05 are cut.
    seen_p = {sample_next(probs.log(), top_p=0.7, generator=g).item() for _ in range(300)}
    assert seen_k == {1, 3} and seen_p == {1, 3}
    assert sample_next(probs.log(), temperature=0).item() == 1


def test_hugging_face_gpt2_weights_give_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.GPT2Config(
        vocab_size=TINY.vocab_size,
        n_positions=TINY.block_size,
        n_embd=TINY.n_embd,
        n_layer=TINY.n_layer,
        n_head=TINY.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=TINY.vocab_size - 1,
        eos_token_id=TINY.vocab_size - 1,
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorms
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
    hf.save_pretrained(tmp_path)  # config.json + model.safetensors, like the released weights
    ours = from_pretrained(tmp_path).eval()
    idx = torch.randint(TINY.vocab_size, (2, TINY.block_size))
    with torch.no_grad():
        expected = hf(idx).logits
        got, _ = ours(idx)
    assert torch.allclose(got, expected, atol=1e-5)
    from_state_dict = GPT(TINY).eval()
    load_hf_state_dict(from_state_dict, hf.state_dict())
    with torch.no_grad():
        assert torch.allclose(from_state_dict(idx)[0], expected, atol=1e-5)
