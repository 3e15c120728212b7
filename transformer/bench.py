"""Speed on the CPU, side by side: one training step of our encoder-decoder against
`torch.nn.Transformer` of the same size, and greedy decoding with and without the KV cache.

    python bench.py                  # one thread, like train.py's default
    python bench.py --threads 0      # torch's default, one per core

Training step: embeddings, encoder and decoder, output projection, label-smoothed cross-entropy,
backward, clipping and Adam, at train.py's default size (C 64, 4 heads, d_ff 256, 2 + 2 layers)
on a batch shaped like the generated pairs (64 sentences, 40 source and 43 target characters).
Both sides get the same weights' shapes, the same masks and the same batch; the steps are timed
in alternation and the median of each kept, so a burst of load on a shared machine hits both
alike. torch.nn.Transformer runs its attention through F.scaled_dot_product_attention, so ours
is timed twice: written out (the default) and with --fused-attention.

Decoding: 100 new tokens per sentence, with the cache (each step feeds the newest token and
reads the stored keys and values) and without it (each step runs the decoder over the whole
prefix again), for one sentence and for a batch of 64. The last line printed is a JSON object
of ratios (collected by `nox -s bench`).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
from model import Seq2SeqTransformer, TransformerConfig

from shared.cli import arg, cli_main
from shared.errors import UserError
from shared.runtime import set_threads


@dataclass
class BenchConfig:
    d_model: int = arg(64, "width (train.py's default)", min=2)
    n_head: int = arg(4, "attention heads", min=1)
    d_ff: int = arg(256, "feed-forward width", min=1)
    n_layers: int = arg(2, "encoder layers, and as many decoder layers", min=1)
    vocab_size: int = arg(60, "characters", min=4)
    batch_size: int = arg(64, "sentence pairs per training step", min=1)
    src_len: int = arg(40, "source characters per sentence", min=1)
    tgt_len: int = arg(43, "target characters per sentence", min=1)
    dropout: float = arg(0.0, "dropout probability, both sides (train.py's default)", min=0)
    repeats: int = arg(20, "timed training steps of each", min=1)
    new_tokens: int = arg(100, "tokens decoded per sentence, with and without the cache", min=1)
    decode_repeats: int = arg(3, "timed decodings of each kind", min=1)
    decode_batches: tuple[int, ...] = arg(
        (1, 64), "sentences decoded at once, one timing each", min=1
    )
    threads: int = arg(1, "torch CPU threads (0: torch's default)", min=0)

    def check(self):
        if self.d_model % self.n_head:
            raise UserError(f"--d-model {self.d_model} is not a multiple of --n-head {self.n_head}")


class TorchSeq2Seq(nn.Module):
    """The same model built from torch's modules: embeddings (shared, scaled by sqrt(C)) plus
    sinusoidal positions, nn.Transformer (post-norm, ReLU), the tied output projection."""

    def __init__(self, cfg: TransformerConfig, pe: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.register_buffer("pe", pe, persistent=False)
        self.transformer = nn.Transformer(
            cfg.d_model, cfg.n_head, cfg.n_encoder_layers, cfg.n_decoder_layers, cfg.d_ff,
            cfg.dropout, batch_first=True,
        )  # fmt: skip
        # nn.Transformer ends both stacks with a LayerNorm; post-norm layers (ours, the
        # paper's) already end in one, so these two are left out to keep the models the same.
        self.transformer.encoder.norm = None
        self.transformer.decoder.norm = None
        self.out_proj = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.out_proj.weight = self.embed.weight

    def forward(self, src, tgt_in, targets, label_smoothing):
        scale = self.cfg.d_model**0.5
        x = self.embed(src) * scale + self.pe[: src.size(1)]
        y = self.embed(tgt_in) * scale + self.pe[: tgt_in.size(1)]
        T = tgt_in.size(1)
        causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.bool)
        src_pad, tgt_pad = src == self.cfg.pad_id, tgt_in == self.cfg.pad_id  # True: padding
        h = self.transformer(
            x, y, tgt_mask=causal, src_key_padding_mask=src_pad,
            tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
        )  # fmt: skip
        logits = self.out_proj(h)
        return nn.functional.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=self.cfg.pad_id,
            label_smoothing=label_smoothing,
        )  # fmt: skip


def make_batch(cfg: BenchConfig, generator: torch.Generator):
    """Random characters (ids >= 3) with ragged lengths: the last quarter of the rows padded."""
    B, S, T = cfg.batch_size, cfg.src_len, cfg.tgt_len
    src = torch.randint(3, cfg.vocab_size, (B, S), generator=generator)
    tgt = torch.randint(3, cfg.vocab_size, (B, T + 1), generator=generator)
    src[B * 3 // 4 :, S // 2 :] = 0
    tgt[B * 3 // 4 :, T // 2 :] = 0
    return src, tgt[:, :-1], tgt[:, 1:]


def time_training_steps(steps: dict, repeats: int) -> dict[str, float]:
    """Median seconds per step of each, timed in alternation after two warm-up rounds."""
    times = {name: [] for name in steps}
    for round_ in range(repeats + 2):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            if round_ >= 2:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def training_step(model, batch, optimizer, forward):
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward(model, *batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def ours_forward(model, src, tgt_in, targets):
    return model(src, tgt_in, targets, label_smoothing=0.1)[1]


def torch_forward(model, src, tgt_in, targets):
    return model(src, tgt_in, targets, label_smoothing=0.1)


def time_decoding(model, src, new_tokens: int, use_cache: bool, repeats: int) -> float:
    """Median seconds to decode new_tokens for every sentence of src."""
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        tokens, _ = model.greedy_decode(src, max_len=new_tokens, use_cache=use_cache)
        times.append(time.perf_counter() - started)
        assert tokens.size(1) == new_tokens
    return statistics.median(times[1:])


def main(cfg: BenchConfig) -> dict:
    set_threads(cfg.threads)
    torch.manual_seed(0)
    model_config = TransformerConfig(
        vocab_size=cfg.vocab_size, max_len=max(cfg.src_len, cfg.tgt_len, cfg.new_tokens) + 1,
        d_model=cfg.d_model, n_head=cfg.n_head, d_ff=cfg.d_ff, n_encoder_layers=cfg.n_layers,
        n_decoder_layers=cfg.n_layers, dropout=cfg.dropout,
    )  # fmt: skip
    fused_config = TransformerConfig(**{**vars(model_config), "fused_attention": True})
    ours = Seq2SeqTransformer(model_config)
    ours_fused = Seq2SeqTransformer(fused_config)
    theirs = TorchSeq2Seq(model_config, ours.positional.pe)
    n_ours = ours.num_params()
    n_theirs = sum(p.numel() for p in theirs.parameters())
    assert n_ours == n_theirs, (n_ours, n_theirs)  # the same size, parameter for parameter
    batch = make_batch(cfg, torch.Generator().manual_seed(0))
    steps = {}
    for name, model, forward in [
        ("ours, written-out attention", ours, ours_forward),
        ("ours, fused attention", ours_fused, ours_forward),
        ("torch.nn.Transformer", theirs, torch_forward),
    ]:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
        steps[name] = training_step(model, batch, optimizer, forward)
    seconds = time_training_steps(steps, cfg.repeats)
    reference = seconds["torch.nn.Transformer"]
    written, fused = seconds["ours, written-out attention"], seconds["ours, fused attention"]
    print(
        f"training step, C {cfg.d_model}, {cfg.n_head} heads, d_ff {cfg.d_ff}, "
        f"{cfg.n_layers} + {cfg.n_layers} layers, {n_ours:,} parameters each, batch "
        f"{cfg.batch_size} x ({cfg.src_len} -> {cfg.tgt_len}), dropout {cfg.dropout}, "
        f"{torch.get_num_threads()} thread(s), median of {cfg.repeats}:"
    )
    for name, s in seconds.items():
        print(f"  {name:<28} {1000 * s:7.1f} ms   {s / reference:5.2f}x torch")

    # Decoding: eos is given an id that never occurs, so every sentence runs new_tokens steps.
    ours.eval()
    ours.eos_id = -1
    decode = {}
    for rows in cfg.decode_batches:
        src = torch.randint(3, cfg.vocab_size, (rows, cfg.src_len))
        cached = time_decoding(ours, src, cfg.new_tokens, True, cfg.decode_repeats)
        uncached = time_decoding(ours, src, cfg.new_tokens, False, cfg.decode_repeats)
        decode[rows] = uncached / cached
        print(
            f"greedy decoding of {cfg.new_tokens} tokens, {rows:>2} sentence(s): "
            f"{1000 * cached:7.1f} ms with the KV cache, {1000 * uncached:7.1f} ms without "
            f"({uncached / cached:.1f}x faster with it)"
        )
    result = {
        "project": "transformer",
        "ratios": {
            "train_step_ours_over_torch": round(written / reference, 3),
            "train_step_ours_fused_over_torch": round(fused / reference, 3),
            **{
                f"kv_cache_speedup_{rows}_sentence{'s' if rows > 1 else ''}": round(ratio, 2)
                for rows, ratio in decode.items()
            },
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    cli_main(main, BenchConfig)
