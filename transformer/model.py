"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), written by hand.

Read top to bottom: attention, multi-head attention, positional encodings, layer
normalisation, the position-wise feed-forward network, the encoder and decoder layers (Add &
Norm after each sub-layer as in the paper, or before it with `norm_first`), the stacks, the
encoder-decoder with greedy and beam decoding (a KV cache makes each new token cost one
position, not the whole prefix), and last the encoder alone: a classifier, and the masked
language model that pre-trains it.

Letters in shape comments: B batch, S source length, T target length, C = d_model,
H heads, D = d_k = C / H per-head width, V vocabulary size, K beams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class TransformerConfig:
    vocab_size: int = 64  # one character vocabulary for both languages (pad, bos, eos first)
    max_len: int = 128  # longest sequence the positional encoding covers
    d_model: int = 128
    n_head: int = 4
    d_ff: int = 512
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    dropout: float = 0.1
    norm_first: bool = False  # False: the paper's post-norm; True: pre-norm (more stable deep)
    positional: str = "sinusoidal"  # or "learned"
    share_embeddings: bool = True  # one table for source, target and the output projection
    fused_attention: bool = False  # F.scaled_dot_product_attention, tested equal to ours
    n_classes: int = 0  # the encoder-only classifier's number of labels (0: not a classifier)
    pad_id: int = 0


# ----------------------------------------------------------------------------- attention


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """x in float32 if it is bf16 or fp16 (what matrix products give under autocast), else as is.

    Sums of exponentials, means and variances lose digits in a 16-bit type (bf16 keeps 8 bits
    of mantissa), so the softmax, the LayerNorm statistics and the losses are computed on this;
    float64 (the tests against torch) stays float64.
    """
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0, training=False):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V   (paper, equation 1).

    q: (B, H, Tq, D), k and v: (B, H, Tk, D); mask: bool, broadcastable to (B, H, Tq, Tk),
    True where a query may look at a key. Returns the output (B, H, Tq, D) and the weights.
    The two products run in autocast's type; the scaling, mask and softmax in float32.
    """
    d_k = q.size(-1)
    scores = full_precision(q @ k.transpose(-2, -1)) / math.sqrt(d_k)  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no weight at all
    weights = scores.softmax(dim=-1)
    out = F.dropout(weights, dropout_p, training).to(v.dtype) @ v  # (B, H, Tq, D)
    return out, weights


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L) tokens -> (B, 1, 1, L): every query may look at every key that is not padding."""
    return (tokens != pad_id)[:, None, None, :]


def causal_mask(length: int, device=None) -> torch.Tensor:
    """(1, 1, T, T), True on and below the diagonal: position t sees positions <= t only."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W^O   (paper, 3.2.2),
    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The H projections of width D are computed as one (C, C) matrix each for Q, K and V, then
    split into heads. Keys and values are projected by `project_kv` apart from the queries, so
    the decoder can cache them (its own past) or compute them once (the encoder's output).
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, fused: bool = False):
        super().__init__()
        assert d_model % n_head == 0, "d_model must be a multiple of n_head"
        self.n_head, self.d_k = n_head, d_model // n_head
        self.q_proj = nn.Linear(d_model, d_model)  # W^Q for all heads at once
        self.k_proj = nn.Linear(d_model, d_model)  # W^K
        self.v_proj = nn.Linear(d_model, d_model)  # W^V
        self.out_proj = nn.Linear(d_model, d_model)  # W^O
        self.dropout = dropout
        self.fused = fused

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        return x.view(B, L, self.n_head, self.d_k).transpose(1, 2)  # (B, H, L, D)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, C) -> keys and values, each (B, H, L, D)."""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def attend(self, x_q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None):
        """Queries from x_q (B, Tq, C) against projected k, v -> (B, Tq, C) and the weights."""
        q = self.split_heads(self.q_proj(x_q))  # (B, H, Tq, D)
        p = self.dropout if self.training else 0.0
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            weights = None
        else:
            out, weights = scaled_dot_product_attention(q, k, v, mask, p, self.training)
        B, H, Tq, D = out.shape
        out = out.transpose(1, 2).reshape(B, Tq, H * D)  # merge heads: (B, Tq, C)
        return self.out_proj(out), weights

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor, mask=None):
        """Self-attention when x_kv is x_q; cross-attention when x_kv is the encoder output."""
        k, v = self.project_kv(x_kv)
        return self.attend(x_q, k, v, mask)


# ----------------------------------------------------------------------------- positions


class SinusoidalPositionalEncoding(nn.Module):
    """PE(pos, 2i) = sin(pos / 10000^(2i/C)), PE(pos, 2i+1) = cos(pos / 10000^(2i/C))  (3.5).

    Each pair of dimensions is a clock of its own frequency, so PE(pos + k) is a fixed rotation
    of PE(pos): relative offsets are linear functions the attention can learn.
    """

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
        inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(pos * inv_freq)
        pe[:, 1::2] = torch.cos(pos * inv_freq[: d_model // 2])
        self.register_buffer("pe", pe.float(), persistent=False)  # a formula, not a weight

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        return self.pe[start : start + length]  # (L, C)


class LearnedPositionalEncoding(nn.Module):
    """One trained vector per position (the paper's alternative, "nearly identical results")."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        return self.table.weight[start : start + length]  # (L, C)


def make_positional(cfg: TransformerConfig) -> nn.Module:
    if cfg.positional == "sinusoidal":
        return SinusoidalPositionalEncoding(cfg.max_len, cfg.d_model)
    if cfg.positional == "learned":
        return LearnedPositionalEncoding(cfg.max_len, cfg.d_model)
    raise ValueError(f"unknown positional encoding {cfg.positional!r}")


# ----------------------------------------------------------------------------- layers


class LayerNorm(nn.Module):
    """LayerNorm(x) = gamma * (x - mean(x)) / sqrt(var(x) + eps) + beta, over the last axis
    (Ba et al., 2016): every position's C features get mean 0 and variance 1, then a learned
    scale and shift. var is the biased variance (divided by C), as in torch.nn.LayerNorm."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))  # gamma
        self.bias = nn.Parameter(torch.zeros(d_model))  # beta
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., C)
        x = full_precision(x)  # the statistics, and so the output, in float32 under autocast
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).square().mean(dim=-1, keepdim=True)
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, the same at every position   (3.3)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Self-attention, then the feed-forward network, each wrapped in Add & Norm:
    post-norm (the paper): x = LayerNorm(x + Sublayer(x)); pre-norm: x = x + Sublayer(LayerNorm(x)).
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(
            cfg.d_model, cfg.n_head, cfg.dropout, cfg.fused_attention
        )
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.norm1 = LayerNorm(cfg.d_model)
        self.norm2 = LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)  # on each sub-layer's output (5.4)
        self.norm_first = cfg.norm_first

    def forward(self, x: torch.Tensor, mask=None):  # x: (B, S, C)
        if self.norm_first:
            h = self.norm1(x)
            a, weights = self.self_attn(h, h, mask)
            x = x + self.dropout(a)
            x = x + self.dropout(self.ff(self.norm2(x)))
        else:
            a, weights = self.self_attn(x, x, mask)
            x = self.norm1(x + self.dropout(a))
            x = self.norm2(x + self.dropout(self.ff(x)))
        return x, weights


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder output, feed-forward; Add & Norm.

    With a `cache` (a dict per layer) x holds only the newest position: its key and value are
    appended to cache["k"], cache["v"], and cache["memory_kv"] holds the cross-attention keys
    and values of the encoder output, computed once per sentence.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(
            cfg.d_model, cfg.n_head, cfg.dropout, cfg.fused_attention
        )
        self.cross_attn = MultiHeadAttention(
            cfg.d_model, cfg.n_head, cfg.dropout, cfg.fused_attention
        )
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.norm1 = LayerNorm(cfg.d_model)
        self.norm2 = LayerNorm(cfg.d_model)
        self.norm3 = LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm_first = cfg.norm_first

    def _self_attention(self, h, self_mask, cache):
        if cache is None:
            return self.self_attn(h, h, self_mask)
        k, v = self.self_attn.project_kv(h)  # (B, H, 1, D): the newest position only
        if "k" in cache:
            k = torch.cat([cache["k"], k], dim=2)  # (B, H, t, D): every position so far
            v = torch.cat([cache["v"], v], dim=2)
        cache["k"], cache["v"] = k, v
        return self.self_attn.attend(h, k, v)  # the newest query may see all of the past

    def _cross_attention(self, h, memory, memory_mask, cache):
        if cache is None:
            return self.cross_attn(h, memory, memory_mask)
        if "memory_kv" not in cache:
            cache["memory_kv"] = self.cross_attn.project_kv(memory)  # (B, H, S, D) each
        return self.cross_attn.attend(h, *cache["memory_kv"], memory_mask)

    def forward(self, y, memory, self_mask=None, memory_mask=None, cache=None):  # y: (B, T, C)
        if self.norm_first:
            a, self_w = self._self_attention(self.norm1(y), self_mask, cache)
            y = y + self.dropout(a)
            a, cross_w = self._cross_attention(self.norm2(y), memory, memory_mask, cache)
            y = y + self.dropout(a)
            y = y + self.dropout(self.ff(self.norm3(y)))
        else:
            a, self_w = self._self_attention(y, self_mask, cache)
            y = self.norm1(y + self.dropout(a))
            a, cross_w = self._cross_attention(y, memory, memory_mask, cache)
            y = self.norm2(y + self.dropout(a))
            y = self.norm3(y + self.dropout(self.ff(y)))
        return y, self_w, cross_w


class Encoder(nn.Module):
    """N encoder layers; pre-norm adds a final LayerNorm (its last residual sum is unnormalised)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.norm = LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()

    def forward(self, x, mask=None):  # x: (B, S, C)
        weights = []
        for layer in self.layers:
            x, w = layer(x, mask)
            weights.append(w)
        return self.norm(x), weights


class Decoder(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.norm = LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()

    def forward(self, y, memory, self_mask=None, memory_mask=None, caches=None):
        self_weights, cross_weights = [], []
        for i, layer in enumerate(self.layers):
            cache = None if caches is None else caches[i]
            y, self_w, cross_w = layer(y, memory, self_mask, memory_mask, cache)
            self_weights.append(self_w)
            cross_weights.append(cross_w)
        return self.norm(y), self_weights, cross_weights


def label_smoothed_cross_entropy(
    logits, targets, smoothing: float, ignore_index: int, reduction: str = "mean"
):
    """Cross-entropy against (1 - eps) one-hot + eps uniform, averaged over non-padding targets
    (reduction "sum": summed over them).

    -sum_v q(v) log p(v) = (1 - eps) (-log p(y)) + eps mean_v(-log p(v))   (paper, 5.4)
    logits: (N, V), targets: (N,).
    """
    log_p = full_precision(logits).log_softmax(dim=-1)
    nll = -log_p.gather(-1, targets.clamp(min=0)[:, None]).squeeze(-1)  # (N,)
    uniform = -log_p.mean(dim=-1)  # (N,)
    loss = (1.0 - smoothing) * nll + smoothing * uniform
    keep = targets != ignore_index
    if reduction == "sum":
        return loss[keep].sum()
    return loss[keep].sum() / keep.sum().clamp(min=1)


# ----------------------------------------------------------------------------- the model


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder: source characters in, target characters out, one at a time.

    forward(src, tgt_in, targets) is teacher forcing: the decoder reads the true target shifted
    right (bos first) and predicts every next character at once, kept from the future by the
    causal mask.
    """

    def __init__(self, cfg: TransformerConfig, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        self.cfg = cfg
        self.bos_id, self.eos_id = bos_id, eos_id
        self.src_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # Shared embeddings (3.4): one matrix for source, target and pre-softmax projection.
        self.tgt_embed = (
            self.src_embed if cfg.share_embeddings else nn.Embedding(cfg.vocab_size, cfg.d_model)
        )
        self.positional = make_positional(cfg)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.out_proj = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.share_embeddings:
            self.out_proj.weight = self.src_embed.weight

    def _init_weights(self):
        # Xavier for every matrix (as the reference implementations do); embeddings N(0, 1/C) so
        # that after the sqrt(C) scale of 3.4 they have unit variance, like the positional code.
        for name, p in self.named_parameters():
            if p.dim() == 2 and "positional" not in name:
                nn.init.xavier_uniform_(p)
        for table in (self.src_embed, self.tgt_embed):
            nn.init.normal_(table.weight, std=self.cfg.d_model**-0.5)

    def embed(self, table: nn.Embedding, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Embedding * sqrt(C) + PE (3.4, 3.5), then dropout: (B, L) -> (B, L, C)."""
        x = table(tokens) * math.sqrt(self.cfg.d_model)
        return self.embed_dropout(x + self.positional(tokens.size(1), start))

    def encode(self, src: torch.Tensor, src_mask=None):
        """src (B, S) -> memory (B, S, C), its padding mask, and the self-attention weights."""
        if src_mask is None:
            src_mask = padding_mask(src, self.cfg.pad_id)  # (B, 1, 1, S)
        memory, weights = self.encoder(self.embed(self.src_embed, src), src_mask)
        return memory, src_mask, weights

    def decode(self, tgt_in, memory, src_mask):
        """Teacher-forced decoder: tgt_in (B, T) -> logits (B, T, V), self and cross weights."""
        # The causal mask alone: targets are padded on the right, so no real position can see a
        # pad anyway, and an id the model itself emitted (pad included) stays a token like any
        # other, exactly as the KV cache of decode_step treats it.
        self_mask = causal_mask(tgt_in.size(1), tgt_in.device)  # (1, 1, T, T)
        y, self_w, cross_w = self.decoder(
            self.embed(self.tgt_embed, tgt_in), memory, self_mask, src_mask
        )
        return self.out_proj(y), self_w, cross_w

    def forward(self, src, tgt_in, targets=None, label_smoothing: float = 0.0, reduction="mean"):
        memory, src_mask, _ = self.encode(src)
        logits, _, _ = self.decode(tgt_in, memory, src_mask)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = label_smoothed_cross_entropy(
                logits.flatten(0, 1), targets.flatten(), label_smoothing, self.cfg.pad_id,
                reduction,
            )  # fmt: skip
        return logits, loss

    def decode_step(self, token, memory, src_mask, caches, position: int):
        """One new target position with the KV cache: token (B, 1) -> logits (B, V)."""
        y = self.embed(self.tgt_embed, token, start=position)  # (B, 1, C)
        y, _, _ = self.decoder(y, memory, None, src_mask, caches)
        return self.out_proj(y[:, -1])

    @torch.no_grad()
    def greedy_decode(self, src, max_len: int, use_cache: bool = True):
        """Most likely next character each step, until eos (or max_len characters).

        Returns tokens (B, <= max_len) without the leading bos (pad after a row's eos) and the
        logits (B, <= max_len, V) they were chosen from. use_cache=False recomputes the whole
        prefix every step: the same result, quadratically more work.
        """
        B, device = src.size(0), src.device
        memory, src_mask, _ = self.encode(src)
        caches = [{} for _ in self.decoder.layers]
        tokens = torch.full((B, 1), self.bos_id, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        all_logits = []
        for t in range(max_len):
            if use_cache:
                logits = self.decode_step(tokens[:, -1:], memory, src_mask, caches, t)
            else:
                logits = self.decode(tokens, memory, src_mask)[0][:, -1]  # (B, V)
            next_token = logits.argmax(dim=-1).masked_fill(done, self.cfg.pad_id)
            all_logits.append(logits)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            done |= next_token == self.eos_id
            if done.all():
                break
        return tokens[:, 1:], torch.stack(all_logits, dim=1)

    @torch.no_grad()
    def beam_search(self, src, beam_size: int, max_len: int, length_penalty: float = 0.6):
        """The beam_size most likely prefixes are kept each step (one source sentence, src (1, S)).

        Each step extends every alive hypothesis by every token and keeps the `width` best
        sums of log-probabilities. A hypothesis that emits eos leaves the beam finished and the
        width shrinks by one, so decoding ends with beam_size finished hypotheses (or at
        max_len); the best by log p / lp(len), lp = ((5 + len) / 6)^alpha (Wu et al., 2016),
        wins. With beam_size 1 this is exactly greedy decoding. Returns the token list (eos
        included).
        """
        assert src.size(0) == 1, "beam search decodes one sentence at a time"
        memory, src_mask, _ = self.encode(src)
        caches = [{} for _ in self.decoder.layers]
        sequences = [[self.bos_id]]  # the alive hypotheses, K of them
        scores = torch.zeros(1, device=src.device)  # (K,) summed log-probabilities
        finished: list[tuple[float, list[int]]] = []
        width = beam_size  # hypotheses still to be found
        for t in range(max_len):
            K = len(sequences)
            last = torch.tensor([[s[-1]] for s in sequences], device=src.device)  # (K, 1)
            logits = self.decode_step(
                last, memory.expand(K, -1, -1), src_mask.expand(K, -1, -1, -1), caches, t
            )
            total = scores[:, None] + logits.log_softmax(dim=-1)  # (K, V)
            top_scores, top_index = total.flatten().topk(min(width, total.numel()))
            beam, token = top_index // total.size(1), top_index % total.size(1)
            keep = []
            for score, b, tok in zip(top_scores.tolist(), beam.tolist(), token.tolist()):
                sequence = sequences[b] + [tok]
                if tok == self.eos_id or t == max_len - 1:
                    lp = ((5 + len(sequence) - 1) / 6) ** length_penalty
                    finished.append((score / lp, sequence[1:]))
                    width -= 1
                else:
                    keep.append((score, b, sequence))
            if not keep:
                break
            sequences = [s for _, _, s in keep]
            scores = torch.tensor([s for s, _, _ in keep], device=src.device)
            rows = torch.tensor([b for _, b, _ in keep], device=src.device)
            for cache in caches:  # each kept hypothesis continues its parent's cache
                cache["k"], cache["v"] = cache["k"][rows], cache["v"][rows]
                cache["memory_kv"] = tuple(m[rows] for m in cache["memory_kv"])
        return max(finished, key=lambda f: f[0])[1]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class TextEncoder(nn.Module):
    """Encoder only: embed * sqrt(C) + positions, then N encoder layers, over one text."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positional = make_positional(cfg)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg)
        nn.init.normal_(self.embed.weight, std=cfg.d_model**-0.5)

    def encode(self, tokens):
        """tokens (B, L) -> outputs (B, L, C), the self-attention weights, the padding mask."""
        mask = padding_mask(tokens, self.cfg.pad_id)  # (B, 1, 1, L)
        x = self.embed(tokens) * math.sqrt(self.cfg.d_model) + self.positional(tokens.size(1))
        h, weights = self.encoder(self.embed_dropout(x), mask)
        return h, weights, mask

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class TransformerClassifier(TextEncoder):
    """The encoder, then the mean of its outputs over the non-padding positions, a linear head.

    The mean keeps every position's vote (BERT's [CLS] token is the learned alternative).
    """

    def __init__(self, cfg: TransformerConfig):
        assert cfg.n_classes > 0, "a classifier needs n_classes > 0"
        super().__init__(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def forward(self, tokens, targets=None, reduction: str = "mean"):  # tokens: (B, L)
        h, _, mask = self.encode(tokens)  # (B, L, C)
        keep = mask[:, 0, 0, :, None].to(h.dtype)  # (B, L, 1)
        pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)  # (B, C)
        logits = self.head(pooled)  # (B, n_classes)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(full_precision(logits), targets, reduction=reduction)
        return logits, loss


class MaskedLanguageModel(TextEncoder):
    """BERT's pre-training task (Devlin et al., 2019, 3.1): predict the tokens hidden in the input.

    The output layer is the embedding matrix again (plus a bias per token), so everything but
    that bias is a part of the classifier's encoder that fine-tuning starts from.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg)
        self.out_bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, tokens, targets=None, reduction: str = "mean"):
        """tokens (B, L) with some replaced; targets (B, L): the original token where one was
        selected, pad elsewhere (not scored). Returns logits (B, L, V) and the loss over the
        selected tokens (their mean; reduction "sum": their sum)."""
        h, _, _ = self.encode(tokens)
        logits = h @ self.embed.weight.T + self.out_bias  # (B, L, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                full_precision(logits).flatten(0, 1), targets.flatten(),
                ignore_index=self.cfg.pad_id, reduction=reduction,
            )  # fmt: skip
        return logits, loss


def mask_tokens(tokens, generator, first_id: int, mask_id: int, vocab_size: int, pad_id: int):
    """BERT's corruption: 15% of the real tokens are selected; of those 80% become [MASK], 10% a
    random token, 10% stay as they are, and only the selected ones are predicted.

    tokens (B, L) -> (corrupted tokens, targets): targets hold the original id at selected
    positions and pad elsewhere. Random replacements are drawn from ids first_id .. V - 1 (the
    characters, never pad, bos, eos or mask).
    """
    real = tokens != pad_id
    draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    selected = real & (draw < 0.15)
    action = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    random_ids = torch.randint(
        first_id, vocab_size, tokens.shape, generator=generator, device=tokens.device
    )
    corrupted = tokens.clone()
    corrupted[selected & (action < 0.8)] = mask_id
    replace = selected & (action >= 0.8) & (action < 0.9)
    corrupted[replace] = random_ids[replace]
    targets = torch.where(selected, tokens, torch.full_like(tokens, pad_id))
    return corrupted, targets
