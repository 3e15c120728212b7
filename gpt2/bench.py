"""Speed of the small CPU preset: training tokens/s and MFU, and sampling with and without the
KV cache. The last line is one JSON object of ratios (collected by `nox -s bench`).

    python bench.py                 # one thread, like train.py's default
    python bench.py --threads 0     # torch's default, one per core

MFU (model FLOPs utilisation, PaLM appendix B) = tokens/s x training FLOPs per token (from
show_params.py) / the FLOP/s of a large float32 matmul measured here, with the same threads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import torch
from model import GPT, GPTConfig
from show_params import flops_per_token

from shared.cli import arg, cli_main
from shared.runtime import get_device, set_threads


@dataclass
class BenchConfig:
    threads: int = arg(1, "torch CPU threads (0: torch's default)", min=0)
    train_steps: int = arg(30, "timed training steps per attention variant", min=1)
    new_tokens: int = arg(500, "tokens sampled, with and without the cache", min=1)
    device: str = arg("cpu", "cpu, cuda, cuda:N or mps")


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


def train_tokens_per_s(config: GPTConfig, steps: int, device: torch.device) -> float:
    """The preset's step: batch 12 x block 64, forward, backward, AdamW."""
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(config.vocab_size, (12, config.block_size), device=device)
    for step in range(steps + 3):  # three warm-up steps
        if step == 3:
            sync(device)
            started = time.perf_counter()
        _, loss = model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return steps * x.numel() / (time.perf_counter() - started)


def sample_tokens_per_s(model: GPT, new_tokens: int, use_cache: bool, device) -> float:
    idx = torch.zeros(1, 1, dtype=torch.long, device=device)
    sync(device)
    started = time.perf_counter()
    for _ in model.stream(idx, new_tokens, top_k=200, use_cache=use_cache):
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
    speeds = {}
    for name, fused in (("written-out", False), ("fused (SDPA)", True)):
        config = GPTConfig(fused_attention=fused)
        speeds[name] = train_tokens_per_s(config, cfg.train_steps, device)
        mfu = speeds[name] * per_token / peak
        print(f"train, {name:>13} attention: {speeds[name]:>9,.0f} tokens/s, MFU {mfu:.1%}")
    # Sampling: the same widths, with room for the prompt and new_tokens in one context.
    torch.manual_seed(0)
    long_context = GPTConfig(block_size=cfg.new_tokens + 1)
    model = GPT(long_context).to(device).eval()
    cached = sample_tokens_per_s(model, cfg.new_tokens, True, device)
    uncached = sample_tokens_per_s(model, cfg.new_tokens, False, device)
    print(
        f"sample {cfg.new_tokens} tokens: {cached:,.0f} tokens/s with the KV cache, "
        f"{uncached:,.0f} without ({cached / uncached:.1f}x)"
    )
    result = {
        "project": "gpt2",
        "ratios": {
            "kv_cache_speedup": round(cached / uncached, 2),
            "train_written_vs_fused_attention": round(
                speeds["written-out"] / speeds["fused (SDPA)"], 3
            ),
            "train_mfu": round(speeds["written-out"] * per_token / peak, 4),
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    cli_main(main, BenchConfig)
