"""A small Stable Diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models"), every part written out:

1. Attention: scaled dot-product, multi-head, self or cross (keys and values from a context).
2. TextEncoder: token + position embeddings, pre-norm transformer blocks -> one vector per token.
3. Autoencoder: image (1, H, W) <-> latent (c, H/4, W/4), KL-regularised ("the VAE").
4. UNet: predicts the noise in a latent, given the time step and the text; its attention blocks
   ("spatial transformers") let image features attend to themselves and to the words.
5. Diffusion: the noise schedule, the training loss, and DDIM sampling with classifier-free
   guidance, negative prompts and image-to-image.

Shapes: B batch, T text tokens, D text width, C channels, H x W a feature map, N = H * W.

Under mixed precision (torch.autocast, bf16 or fp16) the matrix products and convolutions run in
16 bits, while the attention softmax, the GroupNorm and LayerNorm statistics and both losses are
computed in float32 (`upcast`): bf16 keeps 8 significant bits (2-3 decimal digits), too few for
a variance or for softmax weights that must sum to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class SDConfig:
    image_size: int = 24
    vocab_size: int = 48
    max_tokens: int = 14
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    latent_channels: int = 4
    ae_channels: int = 32  # the autoencoder's width at full resolution; doubled per halving
    unet_channels: int = 64  # doubled at the lower U-Net level
    unet_heads: int = 4
    timesteps: int = 1000
    beta_start: float = 0.00085  # Stable Diffusion's "scaled linear" schedule
    beta_end: float = 0.012


# ----------------------------------------------------------------------------- float32 parts


def upcast(x):
    """x in float32, or in its own dtype where that is wider (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm with its mean and variance taken in float32 under autocast too."""

    def forward(self, x):
        return super().forward(upcast(x)).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm with its mean and variance taken in float32 under autocast too."""

    def forward(self, x):
        return super().forward(upcast(x)).to(x.dtype)


# ----------------------------------------------------------------------------- 1. attention


class Attention(nn.Module):
    """Multi-head attention, softmax(Q K^T / sqrt(d_k)) V, per head, heads concatenated.

    Self-attention when no context is given; cross-attention otherwise: queries from x,
    keys and values from the context (here: the text tokens), whose width may differ.
    """

    def __init__(self, dim: int, n_heads: int, context_dim: int | None = None):
        super().__init__()
        context_dim = context_dim or dim
        self.n_heads, self.d_k = n_heads, dim // n_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(context_dim, dim)
        self.v = nn.Linear(context_dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, context=None, context_mask=None):
        """x (B, N, dim); context (B, T, context_dim); context_mask (B, T), True = real token."""
        context = x if context is None else context
        b, n, _ = x.shape
        t = context.shape[1]

        def heads(z, length):  # (B, L, dim) -> (B, heads, L, d_k)
            return z.view(b, length, self.n_heads, self.d_k).transpose(1, 2)

        q, k, v = heads(self.q(x), n), heads(self.k(context), t), heads(self.v(context), t)
        weights = self.attention_weights(q, k, context_mask)  # (B, heads, N, T)
        out = (weights.to(v.dtype) @ v).transpose(1, 2).reshape(b, n, -1)  # (B, N, dim)
        return self.out(out)

    def attention_weights(self, q, k, context_mask=None):
        """softmax(Q K^T / sqrt(d_k)) over the keys, in float32 even when q and k are 16-bit.

        q (B, heads, N, d_k), k (B, heads, T, d_k) -> (B, heads, N, T), each row summing to 1.
        """
        scores = upcast(q @ k.transpose(-2, -1)) / math.sqrt(self.d_k)
        if context_mask is not None:  # padding tokens get zero attention
            scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))
        return scores.softmax(dim=-1)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__(nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))


# ----------------------------------------------------------------------------- 2. text encoder


class TextBlock(nn.Module):
    """Pre-norm transformer block: x + SelfAttn(LN x), then x + FF(LN x)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.norm1, self.norm2 = LayerNorm(dim), LayerNorm(dim)
        self.attention = Attention(dim, n_heads)
        self.ff = FeedForward(dim)

    def forward(self, x, mask):
        h = self.norm1(x)
        x = x + self.attention(h, h, mask)
        return x + self.ff(self.norm2(x))


class TextEncoder(nn.Module):
    """Token ids (B, T) -> per-token embeddings (B, T, D), the context the U-Net attends to."""

    def __init__(self, cfg: SDConfig):
        super().__init__()
        self.token = nn.Embedding(cfg.vocab_size, cfg.text_dim)
        self.position = nn.Parameter(torch.randn(cfg.max_tokens, cfg.text_dim) * 0.02)
        self.blocks = nn.ModuleList(
            [TextBlock(cfg.text_dim, cfg.text_heads) for _ in range(cfg.text_layers)]
        )
        self.norm = LayerNorm(cfg.text_dim)

    def forward(self, ids, mask):
        x = self.token(ids) + self.position[: ids.shape[1]]  # (B, T, D)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


# ----------------------------------------------------------------------------- 3. autoencoder


class ResBlock(nn.Module):
    """GroupNorm - SiLU - conv, twice, plus a skip; optionally adds a time embedding between."""

    def __init__(self, c_in: int, c_out: int, time_dim: int | None = None):
        super().__init__()
        self.norm1 = GroupNorm(min(8, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out) if time_dim else None
        self.norm2 = GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, time_embedding=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time is not None:
            h = h + self.time(time_embedding)[:, :, None, None]  # the same shift at every pixel
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Autoencoder(nn.Module):
    """Encoder: (B, 1, H, W) -> mean and log-variance of q(z|x), each (B, c, H/4, W/4).
    Decoder: z -> logits of p(x|z). Trained on reconstruction + a small KL to N(0, I), which
    keeps the latent space smooth and bounded without forcing it to be a Gaussian."""

    def __init__(self, cfg: SDConfig):
        super().__init__()
        c, z = cfg.ae_channels, cfg.latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),
            ResBlock(c, c),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),  # H/2
            ResBlock(2 * c, 2 * c),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1),  # H/4
            ResBlock(2 * c, 2 * c),
            GroupNorm(8, 2 * c),
            nn.SiLU(),
            nn.Conv2d(2 * c, 2 * z, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(z, 2 * c, 3, padding=1),
            ResBlock(2 * c, 2 * c),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1),
            ResBlock(2 * c, 2 * c),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * c, c, 3, padding=1),
            ResBlock(c, c),
            GroupNorm(8, c),
            nn.SiLU(),
            nn.Conv2d(c, 1, 3, padding=1),
        )

    def encode(self, x):
        mean, log_var = upcast(self.encoder(x)).chunk(2, dim=1)
        return mean, log_var.clamp(-20, 10)

    def decode(self, z):
        return torch.sigmoid(upcast(self.decoder(z)))

    def loss(self, x, kl_weight: float, noise):
        """Binary cross-entropy + kl_weight * KL(q(z|x) || N(0, I)), summed per image, batch mean.

        KL = 1/2 sum (mu^2 + sigma^2 - log sigma^2 - 1); z = mu + sigma * noise (reparameterised),
        noise ~ N(0, I) shaped like the latent, drawn by the caller.
        """
        mean, log_var = self.encode(x)
        z = mean + torch.exp(0.5 * log_var) * noise
        logits = upcast(self.decoder(z))
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
        kl = 0.5 * (mean**2 + log_var.exp() - log_var - 1).sum() / len(x)
        return reconstruction + kl_weight * kl, reconstruction, kl

    forward = loss  # what DistributedDataParallel calls: it averages the gradients of this


# ----------------------------------------------------------------------------- 4. U-Net


def timestep_embedding(t, dim: int):
    """Sinusoidal embedding of integer steps (Transformer positions, DDPM's time input):
    [sin(t w_i), cos(t w_i)] with w_i = 10000^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # (B, dim)


class SpatialTransformer(nn.Module):
    """Image features as a sequence of N = H * W tokens:
    x + SelfAttn(LN x); x + CrossAttn(LN x, text); x + FF(LN x); back to (B, C, H, W)."""

    def __init__(self, channels: int, n_heads: int, text_dim: int):
        super().__init__()
        self.norm_in = GroupNorm(8, channels)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.norm1, self.norm2, self.norm3 = (LayerNorm(channels) for _ in range(3))
        self.self_attention = Attention(channels, n_heads)
        self.cross_attention = Attention(channels, n_heads, context_dim=text_dim)
        self.ff = FeedForward(channels)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x, text, text_mask):
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm_in(x)).flatten(2).transpose(1, 2)  # (B, N, C)
        tokens = tokens + self.self_attention(self.norm1(tokens))
        tokens = tokens + self.cross_attention(self.norm2(tokens), text, text_mask)
        tokens = tokens + self.ff(self.norm3(tokens))
        return x + self.proj_out(tokens.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Two resolution levels over the latent (H/4 and H/8 of the image), a middle, and skip
    connections that concatenate each down-level's features into the matching up-level.
    Every level: a ResBlock (with the time embedding) then a SpatialTransformer (with the text).

    As in SDXL, the text also enters globally: its mean token vector is projected and added to
    the time embedding, so every ResBlock knows *what* to draw, while cross-attention lets
    each position read *where* (and which words concern it).
    """

    def __init__(self, cfg: SDConfig):
        super().__init__()
        c, z, heads, d = cfg.unet_channels, cfg.latent_channels, cfg.unet_heads, cfg.text_dim
        self.time_dim = 4 * c
        self.time_mlp = nn.Sequential(
            nn.Linear(c, self.time_dim), nn.SiLU(), nn.Linear(self.time_dim, self.time_dim)
        )
        self.text_pool = nn.Linear(d, self.time_dim)
        self.conv_in = nn.Conv2d(z, c, 3, padding=1)
        self.down1 = ResBlock(c, c, self.time_dim)
        self.attn_down1 = SpatialTransformer(c, heads, d)
        self.downsample = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.down2 = ResBlock(2 * c, 2 * c, self.time_dim)
        self.attn_down2 = SpatialTransformer(2 * c, heads, d)
        self.mid1 = ResBlock(2 * c, 2 * c, self.time_dim)
        self.attn_mid = SpatialTransformer(2 * c, heads, d)
        self.mid2 = ResBlock(2 * c, 2 * c, self.time_dim)
        self.up2 = ResBlock(4 * c, 2 * c, self.time_dim)
        self.attn_up2 = SpatialTransformer(2 * c, heads, d)
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * c, c, 3, padding=1)
        )
        self.up1 = ResBlock(2 * c, c, self.time_dim)
        self.attn_up1 = SpatialTransformer(c, heads, d)
        self.norm_out = GroupNorm(8, c)
        self.conv_out = nn.Conv2d(c, z, 3, padding=1)
        self.base_channels = c

    def forward(self, z_t, t, text, text_mask):
        """z_t (B, c, h, w) noisy latents; t (B,) steps; text (B, T, D) -> noise (B, c, h, w)."""
        weights = upcast(text_mask[..., None].to(text.dtype))
        pooled = (upcast(text) * weights).sum(1) / weights.sum(1)  # (B, D) mean over real tokens
        emb = self.time_mlp(timestep_embedding(t, self.base_channels)) + self.text_pool(pooled)
        h1 = self.conv_in(z_t)  # (B, C, h, w)
        h1 = self.attn_down1(self.down1(h1, emb), text, text_mask)
        h2 = self.downsample(h1)  # (B, 2C, h/2, w/2)
        h2 = self.attn_down2(self.down2(h2, emb), text, text_mask)
        m = self.mid2(self.attn_mid(self.mid1(h2, emb), text, text_mask), emb)
        u2 = self.attn_up2(self.up2(torch.cat([m, h2], 1), emb), text, text_mask)
        u1 = self.upsample(u2)  # (B, C, h, w)
        u1 = self.attn_up1(self.up1(torch.cat([u1, h1], 1), emb), text, text_mask)
        return self.conv_out(F.silu(self.norm_out(u1)))


# ----------------------------------------------------------------------------- 5. diffusion


def guided_noise(eps_conditional, eps_unconditional, guidance: float):
    """Classifier-free guidance (Ho & Salimans 2022): eps_u + w (eps_c - eps_u).
    w = 1 is the plain conditional model; w > 1 pushes further toward the prompt."""
    return eps_unconditional + guidance * (eps_conditional - eps_unconditional)


def ddim_step(z_t, eps, alpha_bar_t, alpha_bar_prev, eta: float, noise=None):
    """One DDIM update (Song et al. 2021, eq. 12), from step t to the previous kept step:

    z0^ = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)
    z_prev = sqrt(a_prev) z0^ + sqrt(1 - a_prev - sigma^2) eps + sigma noise
    eta = 0 is deterministic; eta = 1 matches DDPM's ancestral variance.
    """
    z0 = (z_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    sigma = (
        eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()
    )
    direction = (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps
    z_prev = alpha_bar_prev.sqrt() * z0 + direction
    if eta > 0:
        z_prev = z_prev + sigma * (torch.randn_like(z_t) if noise is None else noise)
    return z_prev


class StableDiffusion(nn.Module):
    """The three networks and the sampler. `latent_scale` (computed from data) makes the
    latents unit-variance, the scale the noise schedule assumes."""

    def __init__(self, cfg: SDConfig):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = TextEncoder(cfg)
        self.autoencoder = Autoencoder(cfg)
        self.unet = UNet(cfg)
        betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, cfg.timesteps) ** 2
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, dim=0))
        self.register_buffer("latent_scale", torch.tensor(1.0))

    def to_latent(self, images):
        """The encoder's mean, scaled: the latent the U-Net learns to generate."""
        return self.autoencoder.encode(images)[0] * self.latent_scale

    def to_image(self, latents):
        return self.autoencoder.decode(latents / self.latent_scale)

    def q_sample(self, z0, t, noise):
        """z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps, q(z_t | z0) in closed form."""
        a = self.alpha_bar[t][:, None, None, None]
        return a.sqrt() * z0 + (1 - a).sqrt() * noise

    def diffusion_loss(self, z0, ids, mask, t, noise):
        """E_{t, eps} || eps - eps_theta(z_t, t, text) ||^2 (DDPM's simplified objective), for
        steps t (B,) uniform in [0, timesteps) and noise eps ~ N(0, I) like z0, drawn by the caller.
        """
        text = self.text_encoder(ids, mask)
        predicted = self.unet(self.q_sample(z0, t, noise), t, text, mask)
        return F.mse_loss(upcast(predicted), noise)

    forward = diffusion_loss  # what DistributedDataParallel calls (the frozen autoencoder aside)

    @torch.no_grad()
    def sample(
        self,
        ids,
        mask,
        uncond_ids,
        uncond_mask,
        guidance: float = 3.0,
        steps: int = 50,
        eta: float = 0.0,
        init_latents=None,
        strength: float = 1.0,
        generator=None,
    ):
        """DDIM with classifier-free guidance; returns images (B, 1, H, W) in [0, 1].

        uncond_ids is the empty prompt, or a negative prompt: guidance then pushes away from
        it instead of away from "anything". With init_latents, image-to-image: noise the given
        latents to step strength * T, then denoise from there under the prompt.
        """
        b, device = len(ids), ids.device
        side = self.cfg.image_size // 4
        shape = (b, self.cfg.latent_channels, side, side)
        start = int(round(strength * self.cfg.timesteps)) - 1
        schedule = torch.linspace(start, 0, max(1, int(round(steps * strength)))).round().long()
        noise = torch.randn(shape, generator=generator).to(device)
        if init_latents is None:
            z = noise
        else:
            z = self.q_sample(init_latents, schedule[:1].repeat(b).to(device), noise)
        text = self.text_encoder(ids, mask)
        uncond = self.text_encoder(uncond_ids, uncond_mask)
        for i, t in enumerate(schedule.tolist()):
            both = self.unet(
                torch.cat([z, z]),
                torch.full((2 * b,), t, device=device),
                torch.cat([text, uncond]),
                torch.cat([mask, uncond_mask]),
            )
            eps = guided_noise(*both.chunk(2), guidance)
            a_t = self.alpha_bar[t]
            a_prev = self.alpha_bar[schedule[i + 1]] if i + 1 < len(schedule) else torch.tensor(1.0)
            step_noise = torch.randn(shape, generator=generator).to(device) if eta > 0 else None
            z = ddim_step(z, eps, a_t, a_prev.to(device), eta, step_noise)
        return self.to_image(z).clamp(0, 1)
