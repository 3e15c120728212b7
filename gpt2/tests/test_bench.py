import json
from pathlib import Path

import torch
from model import GPT, GPTConfig

from shared.testing import run_script

PROJECT = Path(__file__).parents[1]


def reference_name(ours: str) -> str:
    """Our parameter names (h.0.attn.c_attn.weight) in the reference's (blocks.0.c_attn.weight)."""
    renames = {"attn.c_attn": "c_attn", "attn.c_proj": "attn_proj", "mlp.c_fc": "c_fc"}
    renames["mlp.c_proj"] = "mlp_proj"
    for old, new in renames.items():
        ours = ours.replace(old, new)
    return ours.replace("h.", "blocks.", 1) if ours.startswith("h.") else ours


def test_bench_reference_computes_the_same_loss_as_our_model_with_the_same_weights():
    """The speed ratio compares two codings of one function: with our weights copied in, the
    nanoGPT-style reference gives our loss and our gradients (the presets' exact GELU)."""
    import bench

    config = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=4, n_embd=32, gelu="exact")
    torch.manual_seed(0)
    ours = GPT(config).double()
    reference = bench.ReferenceGPT(config).double()
    reference.load_state_dict({reference_name(k): v for k, v in ours.state_dict().items()})
    idx = torch.randint(config.vocab_size, (3, 16))
    targets = torch.randint(config.vocab_size, (3, 16))
    _, our_loss = ours(idx, targets)
    reference_loss = reference(idx, targets)
    our_loss.backward()
    reference_loss.backward()
    assert torch.allclose(our_loss, reference_loss, atol=1e-12)
    theirs = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        assert torch.allclose(p.grad, theirs[reference_name(name)].grad, atol=1e-12), name


def test_bench_runs_and_reports_its_ratios():
    flags = ("--rounds", "1", "--steps", "1", "--new-tokens", "70")
    result = run_script(PROJECT, "bench.py", *flags)
    ratios = json.loads(result.stdout.strip().splitlines()[-1])["ratios"]
    assert set(ratios) == {
        "train_default_vs_nanogpt_reference",
        "train_preset_vs_nanogpt_reference",
        "kv_cache_speedup_one_block",
        "kv_cache_speedup_past_the_block",
        "train_mfu",
    }
    assert "sample 70 tokens (past the block)" in result.stdout
