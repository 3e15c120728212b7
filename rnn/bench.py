"""One LSTM training step, ours (NumPy) beside torch.nn.LSTM (PyTorch), on the CPU, in one run.

A step is embedding -> LSTM -> linear -> cross-entropy, the backward pass through all of it,
global-norm clipping and Adam: hidden 256, 64 time steps, batch 32, vocabulary 65, float32.
Both sides get the same number of threads. The two are timed in alternation and the median of
each is kept, so anything that slows the CPU for a while slows both alike. The last line printed
is a JSON object with the ratio our time / torch's time (below 1: ours is faster).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from model import Adam, CharRNN, ModelConfig, clip_grad_norm
from threadpoolctl import threadpool_limits

from shared.cli import arg, cli_main


@dataclass
class BenchConfig:
    hidden: int = arg(256, "LSTM hidden width", min=1)
    seq_len: int = arg(64, "time steps", min=1)
    batch_size: int = arg(32, "sequences", min=1)
    vocab_size: int = arg(65, "characters (tiny Shakespeare has 65)", min=2)
    n_embd: int = arg(64, "embedding width", min=1)
    repeats: int = arg(10, "timed steps of each", min=1)
    threads: int = arg(1, "threads for both NumPy's BLAS and torch", min=1)


class TorchCharLSTM(torch.nn.Module):
    def __init__(self, cfg: BenchConfig):
        super().__init__()
        self.embedding = torch.nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.lstm = torch.nn.LSTM(cfg.n_embd, cfg.hidden, batch_first=True)
        self.head = torch.nn.Linear(cfg.hidden, cfg.vocab_size)

    def forward(self, idx, targets):
        h, _ = self.lstm(self.embedding(idx))  # (B, T, H)
        logits = self.head(h)  # (B, T, V)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def main(cfg: BenchConfig) -> dict:
    rng = np.random.default_rng(0)
    idx = rng.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len))
    targets = rng.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len))

    ours = CharRNN(ModelConfig(cfg.vocab_size, "lstm", cfg.n_embd, cfg.hidden, 1), rng)
    optimizer = Adam(ours.named_params(), ours.named_grads(), lr=1e-3)
    grads = list(ours.named_grads().values())

    def our_step():
        ours.forward(idx, targets)
        ours.backward()
        clip_grad_norm(grads, 5.0)
        optimizer.step()

    torch.set_num_threads(cfg.threads)
    theirs = TorchCharLSTM(cfg)
    torch_optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    t_idx, t_targets = torch.from_numpy(idx), torch.from_numpy(targets)

    def torch_step():
        torch_optimizer.zero_grad(set_to_none=True)
        theirs(t_idx, t_targets).backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 5.0)
        torch_optimizer.step()

    times = {"ours": [], "torch": []}
    with threadpool_limits(cfg.threads):
        for _ in range(2):  # warm-up: allocations, caches
            our_step()
            torch_step()
        for _ in range(cfg.repeats):
            for name, step in [("ours", our_step), ("torch", torch_step)]:
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    ours_s, torch_s = statistics.median(times["ours"]), statistics.median(times["torch"])
    shape = f"H={cfg.hidden} T={cfg.seq_len} B={cfg.batch_size} V={cfg.vocab_size}"
    print(f"LSTM training step, {shape}, {cfg.threads} thread(s), median of {cfg.repeats}:")
    print(f"  ours (NumPy)          {1000 * ours_s:8.1f} ms")
    print(f"  torch.nn.LSTM         {1000 * torch_s:8.1f} ms")
    print(f"  ratio ours / torch    {ours_s / torch_s:8.2f}")
    report = {"project": "rnn", "ratios": {"lstm_train_step_ours_over_torch": ours_s / torch_s}}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    cli_main(main, BenchConfig)
