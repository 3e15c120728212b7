"""GPT-2, written out by hand: embeddings, causal self-attention, MLP, blocks, the LM head.

Radford et al. 2019, "Language Models are Unsupervised Multitask Learners". The architecture is
the decoder-only Transformer of GPT-1 with three changes the paper lists: LayerNorm moved to the
input of each sub-block (pre-norm), a final LayerNorm after the last block, and residual
projections initialised with std 0.02 / sqrt(2 * n_layer). The module names follow OpenAI's and
Hugging Face's checkpoints (wte, wpe, h.N.attn.c_attn, ...) so that the released weights load
with nothing renamed; only their Conv1D matrices are stored transposed (see load_hf_state_dict).

Letters used in shape comments: B batch, T time (tokens), C channels (n_embd), H heads,
D head size (C / H), V vocabulary, S the number of keys (cached tokens plus T).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.errors import CheckpointError
from shared.runtime import count_parameters


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64  # the longest context; positions are learned up to here
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    fused_attention: bool = False  # F.scaled_dot_product_attention instead of the written-out one
    gelu: str = "tanh"  # GPT-2's tanh approximation, or "exact": x Phi(x) (see MLP)


# The four released sizes (the paper's Table 2). Vocabulary: 256 bytes + 50,000 merges +
# <|endoftext|>.
PRESETS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}


def preset_config(name: str, **overrides) -> GPTConfig:
    """The GPTConfig of a released GPT-2 size."""
    return GPTConfig(vocab_size=50257, block_size=1024, **{**PRESETS[name], **overrides})


def training_bytes(config: GPTConfig, batch_size: int) -> int:
    """A rough estimate of the memory one float32 training step needs, before allocating it.

    Parameters 16 bytes each (weights, gradients, AdamW's two moments). Activations kept for
    backward, per layer: about 18 (B, T, C) tensors (LayerNorms, Q K V, the MLP's 4C twice,
    projections, residuals) and 3 (B, H, T, T) attention maps; then the (B, T, V) logits twice.
    """
    B, T, C, H = batch_size, config.block_size, config.n_embd, config.n_head
    n_params = count_parameters(lambda: GPT(config))
    per_layer = 18 * B * T * C + 3 * B * H * T * T
    activations = config.n_layer * per_layer + 2 * B * T * config.vocab_size
    return 16 * n_params + 4 * activations


class KVCache:
    """The keys and values of every token seen so far, one (k, v) pair per layer.

    During generation each new token only needs its own query; the keys and values of the
    tokens before it do not change (they see only their past), so we keep them instead of
    recomputing the whole prefix at every step.
    """

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def __len__(self) -> int:  # tokens cached so far
        return 0 if self.keys[0] is None else self.keys[0].size(2)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append this step's (B, H, T, D) keys and values; return all of them, (B, H, S, D)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.layer = layer  # which slot of a KVCache is ours
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # Q, K, V for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # W^O: heads back to the stream
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.fused = config.fused_attention
        # allowed[i, j]: token i may look at token j, i.e. j <= i. Not a parameter, not saved.
        allowed = torch.ones(config.block_size, config.block_size, dtype=torch.bool).tril()
        self.register_buffer("allowed", allowed, persistent=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, H, S, D), the past first
        S = k.size(2)
        # Our T queries are the last T of the S positions: query i sits at position S - T + i.
        allowed = self.allowed[S - T : S, :S]  # (T, S)
        if self.fused:
            p = self.dropout if self.training else 0.0
            # Without a cache (S == T) the mask is the plain causal one, which SDPA's own kernels
            # apply without reading a mask; is_causal would align it wrongly when S > T.
            mask = {"is_causal": True} if S == T else {"attn_mask": allowed}
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, **mask)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(D)  # QK^T / sqrt(d_k): (B, H, T, S)
            att = att.masked_fill(~allowed, float("-inf"))  # no peeking at the future
            # Each row: weights over the past, summing to 1; at least float32 under autocast.
            att = F.softmax(att, dim=-1, dtype=torch.promote_types(att.dtype, torch.float32))
            att = att.to(v.dtype)
            att = self.attn_dropout(att)
            y = att @ v  # softmax(QK^T / sqrt(d_k)) V: (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        # GPT-2 uses the tanh approximation of GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        # and its released weights need it. The exact GELU, x Phi(x) with Phi the normal CDF,
        # is what nanoGPT trains with from scratch: within 1e-3 of it, and on a CPU measured at
        # half the time of the tanh form (forward and backward).
        if config.gelu not in ("tanh", "exact"):
            raise ValueError(f"gelu must be 'tanh' or 'exact', not {config.gelu!r}")
        self.gelu = nn.GELU(approximate="tanh" if config.gelu == "tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, 4C) -> (B, T, C)
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)  # tokens talk to each other
        x = x + self.mlp(self.ln_2(x))  # each token thinks on its own
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embedding
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): the output layer scores a token by its similarity to
        # that token's input embedding. One (V, C) matrix instead of two: 38.6M fewer in GPT-2.
        self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2 section 2.3: scale residual projections by 1/sqrt(N), N = 2 * n_layer residual
        # additions, so the variance of the residual stream does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Every parameter once (the tied head is the token embedding, not counted twice)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ):
        """idx (B, T) token ids -> logits (B, T, V), and the mean cross-entropy if targets given.

        With a cache, idx holds only the new tokens; they continue after the cached ones.
        """
        B, T = idx.shape
        start = len(cache) if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"{start + T} tokens exceed block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C) + (T, C) -> (B, T, C)
        for block in self.h:
            x = block(x, cache)
        x = self.ln_f(x)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        logits_32 = logits.to(torch.promote_types(logits.dtype, torch.float32))  # (fp64 stays)
        loss = F.cross_entropy(logits_32.view(B * T, -1), targets.reshape(B * T))
        return logits, loss

    @torch.no_grad()
    def stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ):
        """Yield (B, 1) new tokens one at a time, continuing idx (B, T).

        Each token is drawn from the logits of the last block_size tokens, with or without the
        cache: both give the same tokens at any length.
        """
        block = self.config.block_size
        cache = KVCache(self.config.n_layer) if use_cache else None
        fresh = idx  # the tokens the model has not yet seen
        for _ in range(max_new_tokens):
            if cache is not None and idx.size(1) <= block:
                logits, _ = self(fresh, cache=cache)  # only the new tokens; the rest is cached
            else:
                # The plain definition: recompute the last block_size tokens. With the cache this
                # happens once the context outgrows the block: positions are learned and
                # absolute, so sliding the window moves every token to a new position and
                # changes every key and value. Nothing cached can be reused.
                logits, _ = self(idx[:, -block:])
            next_token = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            idx = torch.cat([idx, next_token], dim=1)
            fresh = next_token
            yield next_token

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, **sampling) -> torch.Tensor:
        """idx (B, T) followed by max_new_tokens sampled tokens: (B, T + max_new_tokens)."""
        new = list(self.stream(idx, max_new_tokens, **sampling))
        return torch.cat([idx, *new], dim=1)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row from (B, V) logits; temperature 0 means the most likely token."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature  # < 1 sharpens the distribution, > 1 flattens it
    if top_k is not None and top_k < logits.size(-1):
        kth_best = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        # Nucleus sampling (Holtzman et al. 2019): keep the fewest most likely tokens whose
        # probabilities add up to at least top_p.
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - F.softmax(sorted_logits, dim=-1) >= top_p  # mass before it
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


# ---- Released weights ------------------------------------------------------------------------

# OpenAI's TensorFlow code stored these four weight matrices as (in, out) "Conv1D" kernels, and
# Hugging Face kept that layout; nn.Linear stores (out, in).
CONV1D_WEIGHTS = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)


def config_from_hf(hf_config: dict, source: str = "config.json", **overrides) -> GPTConfig:
    """Our GPTConfig from the fields of a Hugging Face GPT2Config (config.json)."""
    try:
        return GPTConfig(
            vocab_size=hf_config["vocab_size"],
            block_size=hf_config["n_positions"],
            n_layer=hf_config["n_layer"],
            n_head=hf_config["n_head"],
            n_embd=hf_config["n_embd"],
            **overrides,
        )
    except KeyError as err:  # the config of another architecture, e.g. "max_position_embeddings"
        raise CheckpointError(
            f"{source} has no {err.args[0]!r} (expected the config of a Hugging Face GPT-2 model)"
        ) from None


def load_hf_state_dict(model: GPT, hf_state: dict[str, torch.Tensor], source: str = "") -> None:
    """Copy a Hugging Face GPT2LMHeadModel / GPT2Model state dict into our model, in place."""
    ours = model.state_dict()
    converted = {}
    for name, tensor in hf_state.items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # old HF causal-mask buffers; lm_head is tied to wte
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        converted[name] = tensor
    converted["lm_head.weight"] = converted.get("wte.weight")
    missing = [k for k in ours if converted.get(k) is None]
    unexpected = [k for k in converted if k not in ours]
    wrong = [k for k in ours if k not in missing and converted[k].shape != ours[k].shape]
    if missing or unexpected or wrong:
        problem = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"shape of {wrong[0]} is {tuple(converted[wrong[0]].shape)}, "
            f"the model wants {tuple(ours[wrong[0]].shape)}"
        )
        raise CheckpointError(f"GPT-2 weights {source} do not fit the model: {problem}")
    model.load_state_dict({k: converted[k] for k in ours})


SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
}


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors file: an 8-byte little-endian header length, a JSON header giving
    each tensor's dtype, shape and byte range, then the raw bytes."""
    data = Path(path).read_bytes()
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_len])
    except (struct.error, ValueError):
        raise CheckpointError(f"{path} is not a safetensors file") from None
    body = memoryview(data)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        flat = torch.frombuffer(bytearray(body[begin:end]), dtype=SAFETENSORS_DTYPES[info["dtype"]])
        tensors[name] = flat.reshape(info["shape"])
    return tensors


def from_pretrained(folder: str | Path, **overrides) -> GPT:
    """Our GPT with the weights of a Hugging Face GPT-2 folder (config.json and
    model.safetensors or pytorch_model.bin), e.g. one made by `save_pretrained`."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json (expected a Hugging Face GPT-2 folder)")
    try:
        hf_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {err}") from None
    config = config_from_hf(hf_config, str(folder / "config.json"), **overrides)
    if (folder / "model.safetensors").is_file():
        state = read_safetensors(folder / "model.safetensors")
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"{folder} has neither model.safetensors nor pytorch_model.bin")
    model = GPT(config)
    load_hf_state_dict(model, state, str(folder))
    return model
