import math

import pytest
import torch
from model import (
    GPT,
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


def test_sampling_with_and_without_cache_gives_the_same_greedy_text():
    model = tiny_model()
    prompt = torch.randint(TINY.vocab_size, (2, 4))
    cached = model.generate(prompt, 12, temperature=0, use_cache=True)
    recomputed = model.generate(prompt, 12, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)


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
