"""Speed of the small CPU preset: training tokens/s beside a nanoGPT-style reference loop, MFU,
and sampling with and without the KV cache. The last line is one JSON object of ratios
(collected by `nox -s bench`).

    python bench.py                 # one thread, like train.py's default
    python bench.py --threads 0     # torch's default, one per core

Training: train.py's step (its model, batches, AdamW groups, learning rate, clipping), with its
default model and with the Shakespeare presets' (SDPA attention, exact GELU), against a
reference written below the way nanoGPT writes it (one fused QKV matrix,
`F.scaled_dot_product_attention(is_causal=True)`, exact GELU, the same sizes, batch, AdamW and
clipping).
The contenders take turns, a few steps each, for several rounds, and each keeps its fastest
round: on a shared machine, load that comes and goes then hits all of them alike.

MFU (model FLOPs utilisation, PaLM appendix B) = tokens/s x training FLOPs per token (from
show_params.py) / the FLOP/s of a large float32 matmul measured here, with the same threads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from model import GPT, GPTConfig
from show_params import flops_per_token
from train import FAST_CPU, TrainConfig, batch_offsets, get_batch, learning_rate, make_optimizer

from shared.cli import arg, cli_main
from shared.runtime import get_device, set_threads


@dataclass
class BenchConfig:
    threads: int = arg(1, "torch CPU threads (0: torch's default)", min=0)
    rounds: int = arg(5, "turns each training contender takes", min=1)
    steps: int = arg(10, "timed training steps per turn", min=1)
    new_tokens: int = arg(500, "tokens sampled past the block, with and without the cache", min=1)
    device: str = arg("cpu", "cpu, cuda, cuda:N or mps")


# ---- The reference: a GPT written the way nanoGPT's model.py writes it -----------------------


class ReferenceBlock(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head = c.n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.attn_proj = nn.Linear(c.n_embd, c.n_embd)
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd)
        self.mlp_proj = nn.Linear(4 * c.n_embd, c.n_embd)

    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList([ReferenceBlock(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in nanoGPT
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets):  # (B, T) each
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def reference_step(model, optimizer, data: torch.Tensor, cfg: TrainConfig, device) -> None:
    """nanoGPT's train.py step: random windows, forward, backward, clip, AdamW."""
    ix = torch.randint(len(data) - cfg.block_size, (cfg.batch_size,))
    x = torch.stack([data[i : i + cfg.block_size] for i in ix]).to(device)
    y = torch.stack([data[i + 1 : i + 1 + cfg.block_size] for i in ix]).to(device)
    loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def our_step(model, optimizer, data: torch.Tensor, cfg: TrainConfig, device, step: int) -> None:
    """train.py's step, with one process and one micro-batch."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, cfg)
    offsets = batch_offsets(step, cfg.batch_size, len(data), cfg.block_size, cfg.seed)
    x, y = get_batch(data, offsets, cfg.block_size, device)
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss.item()  # train.py logs every step's loss


# ---- Timing ----------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int = 1024, trials: int = 20) -> float:
    """FLOP/s of an n x n x n float32 matmul (2 n^3 FLOPs), the best of several trials: on a
    shared machine the fastest trial is the closest to what the hardware can do."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(trials):
        sync(device)
        started = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


OURS = "ours, train.py's default"  # written-out attention, GPT-2's tanh GELU
OURS_PRESET = "ours, the presets"  # FAST_CPU: SDPA attention, exact GELU
REFERENCE = "nanoGPT-style reference"


def training_contenders(cfg: TrainConfig, config: GPTConfig, device) -> dict:
    """name -> a function that runs one training step."""
    contenders = {}
    for name, overrides in ((OURS, {}), (OURS_PRESET, FAST_CPU)):
        torch.manual_seed(0)
        model = GPT(dataclasses.replace(config, **overrides)).to(device)
        optimizer = make_optimizer(model, cfg, device)
        contenders[name] = lambda data, step, m=model, o=optimizer: our_step(
            m, o, data, cfg, device, step
        )
    torch.manual_seed(0)
    reference = ReferenceGPT(config).to(device)
    optimizer = make_optimizer(reference, cfg, device)  # nanoGPT's groups: decay on matrices
    contenders[REFERENCE] = lambda data, step: reference_step(
        reference, optimizer, data, cfg, device
    )
    return contenders


def train_speeds(bench: BenchConfig, device) -> dict[str, float]:
    """Training tokens/s of each contender: the fastest of bench.rounds alternating turns."""
    cfg = TrainConfig()  # the preset: 4 layers, 4 heads, 128 wide, block 64, batch 12
    config = GPTConfig(vocab_size=65)  # tiny Shakespeare's characters
    data = torch.randint(config.vocab_size, (100_000,), generator=torch.Generator().manual_seed(0))
    contenders = training_contenders(cfg, config, device)
    for run_step in contenders.values():  # warm-up
        for step in range(3):
            run_step(data, step)
    best = dict.fromkeys(contenders, math.inf)
    for round_ in range(bench.rounds):
        for name, run_step in contenders.items():
            sync(device)
            started = time.perf_counter()
            for step in range(bench.steps):
                run_step(data, 3 + round_ * bench.steps + step)
            sync(device)
            best[name] = min(best[name], time.perf_counter() - started)
    tokens = bench.steps * cfg.batch_size * cfg.block_size
    return {name: tokens / seconds for name, seconds in best.items()}


def sample_tokens_per_s(model: GPT, new_tokens: int, use_cache: bool, device) -> float:
    idx = torch.zeros(1, 1, dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    sync(device)
    started = time.perf_counter()
    for _ in model.stream(idx, new_tokens, top_k=200, use_cache=use_cache, generator=g):
        pass
    sync(device)
    return new_tokens / (time.perf_counter() - started)


def main(cfg: BenchConfig) -> dict:
    set_threads(cfg.threads)
    device = get_device(cfg.device)
    preset = GPTConfig()  # 4 layers, 4 heads, 128 wide, block 64, Shakespeare's 65 characters
    peak = matmul_peak(device)
    per_token = flops_per_token(preset)
    print(f"{torch.get_num_threads()} thread(s); float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"small preset: {per_token / 1e6:.2f} MFLOPs per training token")
    speeds = train_speeds(cfg, device)
    reference = speeds[REFERENCE]
    for name, speed in speeds.items():
        print(
            f"train, {name:>25}: {speed:>7,.0f} tokens/s, MFU {speed * per_token / peak:.1%}, "
            f"{speed / reference:.2f}x the reference"
        )
    # Sampling at the preset's block of 64: one prompt token and 63 new ones fill the block, and
    # the cache serves every step; past the block each step recomputes the sliding window.
    torch.manual_seed(0)
    model = GPT(preset).to(device).eval()
    ratios = {}
    for label, n_new in (("one block", preset.block_size - 1), ("past the block", cfg.new_tokens)):
        cached = sample_tokens_per_s(model, n_new, True, device)
        uncached = sample_tokens_per_s(model, n_new, False, device)
        ratios[label] = cached / uncached
        print(
            f"sample {n_new} tokens ({label}): {cached:,.0f} tokens/s with the KV cache, "
            f"{uncached:,.0f} without ({ratios[label]:.1f}x)"
        )
    result = {
        "project": "gpt2",
        "ratios": {
            "train_default_vs_nanogpt_reference": round(speeds[OURS] / reference, 3),
            "train_preset_vs_nanogpt_reference": round(speeds[OURS_PRESET] / reference, 3),
            "kv_cache_speedup_one_block": round(ratios["one block"], 2),
            "kv_cache_speedup_past_the_block": round(ratios["past the block"], 2),
            "train_mfu": round(speeds[OURS_PRESET] * per_token / peak, 4),
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    cli_main(main, BenchConfig)
