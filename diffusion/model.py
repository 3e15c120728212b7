"""The denoising network of a diffusion model: a U-Net, written by hand.

    eps_theta(x_t, t, y)    x_t: (B, C, H, W) noisy images, t: (B,) integer steps, y: (B,) labels

The U-Net (Ronneberger et al. 2015) in the form DDPM (Ho et al. 2020) gave it: a sinusoidal
embedding of the step t and a small MLP, residual blocks with GroupNorm that add that embedding
(and, for class-conditional models, a learned class embedding) to every feature map, strided
convolutions down, nearest-neighbour upsampling back up, skip connections between the two
halves, and self-attention at the low resolutions. The output has the input's shape: the
predicted noise (or velocity). The diffusion process itself lives in `diffusion.py`.

Shapes: B batch, C channels, H, W height and width, E the time-embedding width, N = H * W
pixels seen as tokens, h heads, d channels per head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.runtime import count_parameters


@dataclass
class UNetConfig:
    image_size: int = 16  # H = W of the images
    in_channels: int = 1  # 1 grey, 3 colour
    base_channels: int = 32  # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one level per entry; each after the first halves H
    num_res_blocks: int = 1  # residual blocks per level on the way down (one more on the way up)
    attention_resolutions: tuple[int, ...] = (8, 4)  # side lengths where self-attention runs
    num_heads: int = 4
    num_groups: int = 8  # GroupNorm groups; must divide every channel count
    dropout: float = 0.0
    num_classes: int = 0  # 0: unconditional; else one embedding per class plus a "no class" one


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps, as in the Transformer's positions.

    emb(t)_i = cos(t * w_i) for i < dim/2 and sin(t * w_(i - dim/2)) after, w_i = P^(-i / (dim/2)).
    """
    half = dim // 2
    dtype = torch.float32 if t.device.type == "mps" else torch.float64  # MPS has no float64
    i = torch.arange(half, dtype=dtype, device=t.device)  # on t's device, like everything here
    freqs = torch.exp(-math.log(max_period) * i / half)  # w_i
    args = t.to(dtype)[:, None] * freqs[None, :]  # (B, dim/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, dim)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb.to(torch.get_default_dtype())


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x in float32 when autocast made it bf16 or fp16; float32 and float64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (Wu & He 2018) with its statistics in float32 under autocast.

    y = (x - mean) / sqrt(var + eps) * gamma + beta, mean and var over each group of C / G
    channels and all pixels. A bf16 map has 8 bits of mantissa, so the map is widened first:
    the statistics and the normalised map are float32's on every device (CUDA's autocast does
    this for nn.GroupNorm, the CPU's does not), and the next convolution casts down again.
    """

    def forward(self, x):  # x: (B, C, H, W), any dtype -> at least float32
        return F.group_norm(at_least_float32(x), self.num_groups, self.weight, self.bias, self.eps)


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) over the keys: (B, h, N, d) twice -> (B, h, N, N).

    The scores come in autocast's dtype (a matrix product); the softmax runs in float32, so
    every row of weights sums to 1 to float32's precision, not to bf16's 1 +- 0.004.
    """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # Q K^T / sqrt(d)
    return at_least_float32(scores).softmax(dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t, then an MLP: the vector every residual block is told."""

    def __init__(self, base_channels: int, embed_dim: int):
        super().__init__()
        self.base_channels = base_channels
        self.mlp = nn.Sequential(
            nn.Linear(base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )

    def forward(self, t):  # t: (B,)
        return self.mlp(timestep_embedding(t, self.base_channels))  # (B, E)


class ResidualBlock(nn.Module):
    """GroupNorm, SiLU, conv; add the embedding; GroupNorm, SiLU, dropout, conv; add the skip."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = GroupNorm32(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.embed = nn.Linear(embed_dim, c_out)  # one shift per channel, from (t, y)
        self.norm2 = GroupNorm32(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        # A 1x1 convolution matches channel counts on the skip path when they differ.
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):  # x: (B, C_in, H, W), emb: (B, E)
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = h + self.embed(F.silu(emb))[:, :, None, None]  # broadcast over H, W
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection.

    Every pixel is a token: softmax(Q K^T / sqrt(d)) V, per head, then an output projection.
    """

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x):  # x: (B, C, H, W)
        B, C, H, W = x.shape
        h, d = self.num_heads, C // self.num_heads
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
        q, k, v = self.qkv(tokens).split(C, dim=2)  # each (B, N, C)
        q, k, v = (z.view(B, H * W, h, d).transpose(1, 2) for z in (q, k, v))  # each (B, h, N, d)
        out = attention_weights(q, k).to(v.dtype) @ v  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, H * W, C)  # (B, N, C): heads side by side
        out = self.proj(out).transpose(1, 2).view(B, C, H, W)
        return x + out


class Downsample(nn.Module):
    """Halve H and W with a strided 3x3 convolution (learned, unlike pooling)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):  # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour copies, then a 3x3 convolution to smooth them."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):  # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Level(nn.Module):
    """The residual blocks of one resolution, each followed by attention where configured."""

    def __init__(self, blocks: list[ResidualBlock], attention: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = nn.ModuleList(attention)


class UNet(nn.Module):
    """eps_theta(x_t, t, y): the U-Net that predicts the noise in x_t."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        levels = len(cfg.channel_mults)
        if cfg.image_size % 2 ** (levels - 1):
            raise ValueError(f"image size {cfg.image_size} does not halve {levels - 1} times")
        embed_dim = 4 * cfg.base_channels
        self.time_embed = TimeEmbedding(cfg.base_channels, embed_dim)
        # Index num_classes is the "no class" label that classifier-free guidance trains with.
        self.class_embed = (
            nn.Embedding(cfg.num_classes + 1, embed_dim) if cfg.num_classes > 0 else None
        )
        self.stem = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)

        def block(c_in, c_out):
            return ResidualBlock(c_in, c_out, embed_dim, cfg.num_groups, cfg.dropout)

        def attention(size, c):
            if size in cfg.attention_resolutions:
                return SelfAttention(c, cfg.num_heads, cfg.num_groups)
            return nn.Identity()

        # Down: each level's outputs are kept for the skip connections.
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skip_channels = [cfg.base_channels]
        c, size = cfg.base_channels, cfg.image_size
        for i, mult in enumerate(cfg.channel_mults):
            c_out = cfg.base_channels * mult
            blocks, attn = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(block(c, c_out))
                attn.append(attention(size, c_out))
                c = c_out
                skip_channels.append(c)
            self.down.append(Level(blocks, attn))
            last = i == levels - 1
            self.downsample.append(nn.Identity() if last else Downsample(c))
            if not last:
                size //= 2
                skip_channels.append(c)

        self.mid_block1 = block(c, c)
        self.mid_attention = SelfAttention(c, cfg.num_heads, cfg.num_groups)
        self.mid_block2 = block(c, c)

        # Up: mirror of the way down, each block taking one skip (concatenated on channels).
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.channel_mults))):
            c_out = cfg.base_channels * mult
            blocks, attn = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(block(c + skip_channels.pop(), c_out))
                attn.append(attention(size, c_out))
                c = c_out
            self.up.append(Level(blocks, attn))
            self.upsample.append(Upsample(c) if i > 0 else nn.Identity())
            if i > 0:
                size *= 2

        self.out_norm = GroupNorm32(cfg.num_groups, c)
        self.out_conv = nn.Conv2d(c, cfg.in_channels, 3, padding=1)

    def forward(self, x, t, y=None):  # x: (B, C, H, W), t: (B,) long, y: (B,) long, -1 = none
        emb = self.time_embed(t)  # (B, E)
        if self.class_embed is not None:
            # y = None, or a label of -1, means "no class" (index num_classes).
            y = torch.full_like(t, -1) if y is None else y
            emb = emb + self.class_embed(torch.where(y >= 0, y, self.config.num_classes))
        elif y is not None:
            raise ValueError("this U-Net was built without classes (num_classes=0)")

        h = self.stem(x)  # (B, base, H, W)
        skips = [h]
        for level, down in zip(self.down, self.downsample):
            for block, attn in zip(level.blocks, level.attention):
                h = attn(block(h, emb))
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)  # (B, C, H/2, W/2)
                skips.append(h)

        h = self.mid_block2(self.mid_attention(self.mid_block1(h, emb)), emb)

        for level, up in zip(self.up, self.upsample):
            for block, attn in zip(level.blocks, level.attention):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))  # skip joins on C
            h = up(h)  # (B, C, 2H, 2W), or unchanged at the top level

        return self.out_conv(F.silu(self.out_norm(h)))  # (B, C_in, H, W)


def training_bytes(config: UNetConfig, batch_size: int) -> int:
    """An estimate of what one training step of this U-Net needs, in bytes of float32.

    Weights, their gradients, AdamW's two moments and the EMA copy are five floats per
    parameter (counted on the meta device, so nothing is allocated). The activations that
    backward keeps are about 14 feature maps per residual block (two GroupNorms, two SiLUs,
    two convolutions, the embedding sum, the concatenated skip, ...) and, per attention layer,
    8 maps and three (h, N, N) matrices (the scores, their softmax, its gradient).
    """
    floats = 5 * count_parameters(lambda: UNet(config))
    side = config.image_size
    levels = len(config.channel_mults)
    for i, mult in enumerate(config.channel_mults):
        c, pixels = config.base_channels * mult, side * side
        last = i == levels - 1
        blocks = 2 * config.num_res_blocks + 1 + (2 if last else 0)  # down, up (+1), middle
        floats += batch_size * blocks * 14 * c * pixels
        attention = blocks - (2 if last else 0) if side in config.attention_resolutions else 0
        attention += 1 if last else 0  # the middle's
        floats += batch_size * attention * (8 * c * pixels + 3 * config.num_heads * pixels**2)
        side //= 2
    return 4 * floats


class EMA:
    """A moving average of a model's weights: theta_ema <- d_n theta_ema + (1 - d_n) theta.

    Samples from the averaged weights are smoother and better than from the last step's weights
    (DDPM uses d = 0.9999 over 800k steps; short runs need a smaller d). The decay warms up,
    d_n = min(d, (1 + n) / (10 + n)) after n earlier updates (0 at the first: a copy), as
    TensorFlow's ExponentialMovingAverage and diffusers' EMAModel do: with a fixed d = 0.999,
    after 1,200 steps 0.999^1200 = 30% of the average would still be the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, n: int) -> float:
        """d_n, the decay of the update that follows n earlier ones."""
        return 0.0 if n == 0 else min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, n: int) -> None:
        """The (n+1)-th update: train.py passes the step, so a resumed run needs no counter."""
        d = self.decay_at(n)
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[name].lerp_(value, 1 - d)  # d * ema + (1 - d) * value
            else:
                self.shadow[name].copy_(value)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            self.shadow[name].copy_(value)
