"""The figures and samples of a finished run: the loss curves against the n-gram baselines, and
text or names sampled from the trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from data import sample_names, sample_text

from shared.plots import plot_curves


def plot_losses(path: Path, history: dict, baselines: tuple[float, float], title: str) -> None:
    """Training and validation loss per logged step, with the unigram and bigram lines."""
    unigram_loss, bigram_loss = baselines
    last = history["step"][-1]
    plot_curves(
        path,
        {
            "train": (history["step"], history["train_loss"]),
            "validation": (history["step"], history["val_loss"]),
            "unigram baseline": ([0, last], [unigram_loss] * 2),
            "bigram baseline": ([0, last], [bigram_loss] * 2),
        },
        ylabel="loss (nats per character)",
        title=title,
    )


def write_samples(path: Path, model, vocab, mode: str, length: int, temperature: float, seed: int):
    """`length` characters of text, or 20 names, from a generator of its own; returns them."""
    rng = np.random.default_rng(seed)
    if mode == "text":
        sample = sample_text(model, vocab, "", length, rng, temperature)
    else:
        sample = "\n".join(sample_names(model, vocab, "", 20, rng, temperature))
    path.write_text(sample + "\n", encoding="utf-8")
    return sample
