"""What a training run leaves beside its checkpoint: the loss curves and two samples."""

from __future__ import annotations

from pathlib import Path

import torch
from model import GPT
from tokenizer import END_OF_TEXT

from shared.checkpoint import atomic_write_text
from shared.logging import read_log
from shared.plots import plot_curves


def write_loss_plot(run_path: Path) -> None:
    """loss.png from log.jsonl: the loss of every step and the periodic estimates."""
    train, evals = {}, {}
    for record in read_log(run_path):
        if "loss" in record:
            train[record["step"]] = record["loss"]
        if "val_loss" in record:
            evals[record["step"]] = (record["train_loss"], record["val_loss"])
    steps = sorted(evals)
    plot_curves(
        run_path / "loss.png",
        {
            "train (per step)": (sorted(train), [train[s] for s in sorted(train)]),
            "train (estimate)": (steps, [evals[s][0] for s in steps]),
            "val (estimate)": (steps, [evals[s][1] for s in steps]),
        },
        xlabel="step",
        ylabel="cross-entropy (nats per token)",
    )


def prompt_ids(tokenizer) -> list[int]:
    """Where samples start: <|endoftext|> for BPE (GPT-2's document separator), else a newline."""
    if tokenizer.kind == "bpe":
        return [tokenizer.special[END_OF_TEXT]]
    return tokenizer.encode("\n") if "\n" in tokenizer.chars else [0]


def write_samples(model: GPT, tokenizer, cfg, device, path: Path) -> None:
    """Two samples of cfg.sample_tokens tokens (temperature 0.8, top-k 200, seeded by cfg.seed)
    into samples.txt; the first is printed too."""
    model.eval()
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    idx = torch.tensor([prompt_ids(tokenizer)] * 2, device=device)
    out = model.generate(idx, cfg.sample_tokens, temperature=0.8, top_k=200, generator=g)
    samples = [tokenizer.decode(row.tolist()) for row in out]
    atomic_write_text(path, "\n\n---------------\n\n".join(samples) + "\n")
    print(f"sample:\n{samples[0].strip()}\n")
