"""Variational autoencoders (Kingma & Welling, 2014), written out piece by piece.

The generative model is p(z) p(x|z) with a standard normal prior p(z) = N(0, I) and a decoder
network giving the parameters of p(x|z). The encoder gives a diagonal Gaussian
q(z|x) = N(mu, diag(sigma^2)). Training maximises the evidence lower bound

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)

with the KL in closed form and the expectation estimated by the reparameterisation
z = mu + sigma * eps, eps ~ N(0, I). The importance-weighted bound (Burda et al., 2016)

    IWAE_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)

is tighter for every k and tends to log p(x) as k grows: it is the likelihood we report.

Letters: B batch, C channels, H = W image side, D = C*H*W pixels, L latent size, K classes,
S importance samples.

Variants: an MLP or a convolutional encoder/decoder; Bernoulli (on binarised images),
continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019) or Gaussian pixel likelihood; beta > 1
(Higgins et al., 2017) weights the KL; with n_classes > 0 the model is a conditional VAE
(Sohn et al., 2015) whose encoder and decoder both see the one-hot class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian")
LOG_2PI = math.log(2 * math.pi)
# The Gaussian decoder's pixel variance may not shrink below exp(-6) (sigma ~ 0.05): images have
# pixels that never change (the digits' black border), and on those a free variance would
# shrink towards zero and drive the density, and the loss, to infinity.
MIN_PIXEL_LOG_VAR = -6.0


@dataclass
class VAEConfig:
    image_channels: int = 1
    image_size: int = 8
    arch: str = "mlp"  # mlp or conv
    likelihood: str = "bernoulli"  # bernoulli, continuous-bernoulli or gaussian
    latent_dim: int = 8
    hidden: int = 256  # MLP hidden width; conv: channels of the last conv layer
    n_classes: int = 0  # > 0: a conditional VAE, p(x|z,y) and q(z|x,y)
    beta: float = 1.0  # weight of the KL term in the training loss (beta-VAE)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.arch == "conv" and self.image_size % 4:
            raise ValueError(
                f"the conv VAE needs an image side divisible by 4, not {self.image_size}"
            )


# ----------------------------------------------------------------------------- pixel likelihoods
# Each takes x (B, D) and the decoder's output (B, D) and returns log p(x|z) per image, (B,).


def bernoulli_log_prob(x, logits):
    """sum_d x_d log lambda_d + (1 - x_d) log(1 - lambda_d), lambda = sigmoid(logits)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def continuous_bernoulli_log_norm(logits):
    """log C(lambda), the normaliser that makes lambda^x (1-lambda)^(1-x) a density on [0, 1].

    C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda). With lambda = sigmoid(eta):
    1 - 2 lambda = -tanh(eta/2) and atanh(1 - 2 lambda) = -eta/2, so C = eta / tanh(eta/2),
    which tends to 2 at eta = 0; there we use its Taylor series 2 (1 + eta^2/12 + ...).
    """
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe / torch.tanh(safe / 2))
    taylor = math.log(2.0) + logits**2 / 12  # log(2 + eta^2/6) to second order
    return torch.where(small, taylor, exact)


def continuous_bernoulli_log_prob(x, logits):
    """Bernoulli's formula applied to x in [0, 1], plus log C(lambda)."""
    return bernoulli_log_prob(x, logits) + continuous_bernoulli_log_norm(logits).sum(-1)


def continuous_bernoulli_mean(logits):
    """E[x] = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda)),
    which in the logit eta is sigmoid(eta) / tanh(eta/2) - 1/eta.

    Not lambda itself: the continuous Bernoulli's mean is pulled towards 1/2.
    """
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.sigmoid(safe) / torch.tanh(safe / 2) - 1 / safe
    return torch.where(small, 0.5 + logits / 12, exact)


def gaussian_log_prob(x, mean, log_var):
    """log N(x; mean, diag(exp(log_var))) = -1/2 sum_d [log 2 pi + log_var + (x - mean)^2 / var]."""
    return -0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * torch.exp(-log_var)).sum(-1)


# ----------------------------------------------------------------------------- the latent Gaussian


def gaussian_kl(mu, log_var):
    """KL(N(mu, diag(sigma^2)) || N(0, I)) = -1/2 sum_l (1 + log sigma^2 - mu^2 - sigma^2).

    Kingma & Welling (2014), appendix B. mu, log_var: (B, L) -> (B,).
    """
    return -0.5 * (1 + log_var - mu**2 - torch.exp(log_var)).sum(-1)


def _at_least_float32(t):
    """bf16/fp16 activations (autocast) as float32; float64 stays float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def reparameterize(mu, log_var, eps=None):
    """z = mu + sigma * eps with eps ~ N(0, I): a sample of q(z|x) that is differentiable in mu
    and log_var, because the randomness lives in eps, which does not depend on them."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * log_var) * eps


# ----------------------------------------------------------------------------- networks


class MLPEncoder(nn.Module):
    """x (B, D) [+ one-hot y (B, K)] -> hidden -> hidden -> (mu, log sigma^2), each (B, L)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        n_pixels = cfg.image_channels * cfg.image_size**2
        self.body = nn.Sequential(
            nn.Linear(n_pixels + cfg.n_classes, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(cfg.hidden, 2 * cfg.latent_dim)

    def forward(self, x, y_onehot):  # x: (B, C, H, W)
        h = torch.cat([x.flatten(1), y_onehot], dim=1)  # (B, D + K)
        mu, log_var = self.head(self.body(h)).chunk(2, dim=1)  # each (B, L)
        return mu, log_var


class MLPDecoder(nn.Module):
    """z (B, L) [+ one-hot y] -> hidden -> hidden -> one parameter per pixel, (B, D)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        n_pixels = cfg.image_channels * cfg.image_size**2
        self.net = nn.Sequential(
            nn.Linear(cfg.latent_dim + cfg.n_classes, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, n_pixels),
        )

    def forward(self, z, y_onehot):
        return self.net(torch.cat([z, y_onehot], dim=1))  # (B, D)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (H -> H/2 -> H/4), then a linear head to (mu, log sigma^2)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        c1, c2 = cfg.hidden // 2, cfg.hidden
        self.convs = nn.Sequential(
            nn.Conv2d(cfg.image_channels, c1, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
        )
        n_flat = c2 * (cfg.image_size // 4) ** 2
        self.head = nn.Linear(n_flat + cfg.n_classes, 2 * cfg.latent_dim)

    def forward(self, x, y_onehot):  # x: (B, C, H, W)
        h = self.convs(x).flatten(1)  # (B, c2 * H/4 * W/4)
        mu, log_var = self.head(torch.cat([h, y_onehot], dim=1)).chunk(2, dim=1)
        return mu, log_var


class ConvDecoder(nn.Module):
    """A linear layer to a (c2, H/4, W/4) map, then two stride-2 transposed convolutions to H."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        c1, c2 = cfg.hidden // 2, cfg.hidden
        self.start = (c2, cfg.image_size // 4, cfg.image_size // 4)
        self.fc = nn.Linear(cfg.latent_dim + cfg.n_classes, math.prod(self.start))
        self.deconvs = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, kernel_size=4, stride=2, padding=1),  # H/4 -> H/2
            nn.ReLU(),
            nn.ConvTranspose2d(c1, cfg.image_channels, kernel_size=4, stride=2, padding=1),
        )

    def forward(self, z, y_onehot):
        h = self.fc(torch.cat([z, y_onehot], dim=1)).view(-1, *self.start)  # (B, c2, H/4, W/4)
        return self.deconvs(h).flatten(1)  # (B, D)


def iwae_bound(log_w, k: int):
    """IWAE_k per image (B,) from S >= k log-weights (S, B): the S // k disjoint groups of k
    draws each give logsumexp_i log w_i - log k (Burda et al., 2016, eq. 8), and we average them.

    Each group alone is an estimate of IWAE_k; their mean has less variance. So one set of
    5000 draws gives IWAE_1 (the mean of log w), IWAE_50 and IWAE_5000 at once.
    """
    n_groups = log_w.shape[0] // k
    groups = log_w[: n_groups * k].view(n_groups, k, -1)  # (S // k, k, B)
    return (torch.logsumexp(groups, dim=1) - math.log(k)).mean(0)


# ----------------------------------------------------------------------------- the VAE


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        encoder, decoder = (
            (MLPEncoder, MLPDecoder) if cfg.arch == "mlp" else (ConvEncoder, ConvDecoder)
        )
        self.encoder = encoder(cfg)
        self.decoder = decoder(cfg)
        if cfg.likelihood == "gaussian":
            # One learned variance per pixel, shared by all images: p(x|z) = N(mean(z), sigma_d^2).
            n_pixels = cfg.image_channels * cfg.image_size**2
            self.pixel_log_var = nn.Parameter(torch.full((n_pixels,), -2.0))

    def one_hot(self, y, batch: int):
        """(B, K) one-hot classes, or a (B, 0) tensor for an unconditional model."""
        if self.cfg.n_classes == 0:
            return torch.zeros(batch, 0, device=self.encoder.head.weight.device)
        if y is None:
            raise ValueError("a conditional VAE needs the class y")
        return F.one_hot(y, self.cfg.n_classes).to(self.encoder.head.weight.dtype)

    def encode(self, x, y=None):
        """q(z|x, y): mu and log sigma^2, each (B, L)."""
        return self.encoder(x, self.one_hot(y, len(x)))

    def decode(self, z, y=None):
        """The decoder's raw output (B, D): logits (Bernoulli kinds) or the Gaussian mean."""
        out = self.decoder(z, self.one_hot(y, len(z)))
        return torch.sigmoid(out) if self.cfg.likelihood == "gaussian" else out

    def log_likelihood(self, x, decoded):
        """log p(x|z) per image, (B,), for x (B, C, H, W) and decoded (B, D)."""
        x = x.flatten(1)
        if self.cfg.likelihood == "bernoulli":
            return bernoulli_log_prob(x, decoded)
        if self.cfg.likelihood == "continuous-bernoulli":
            return continuous_bernoulli_log_prob(x, decoded)
        log_var = self.pixel_log_var.clamp(min=MIN_PIXEL_LOG_VAR)
        return gaussian_log_prob(x, decoded, log_var.expand_as(decoded))

    def mean_image(self, decoded):
        """E[x|z] as images (B, C, H, W), for pictures."""
        if self.cfg.likelihood == "bernoulli":
            mean = torch.sigmoid(decoded)
        elif self.cfg.likelihood == "continuous-bernoulli":
            mean = continuous_bernoulli_mean(decoded)
        else:
            mean = decoded
        c, s = self.cfg.image_channels, self.cfg.image_size
        return mean.view(-1, c, s, s)

    def elbo_terms(self, x, y=None, eps=None):
        """One-sample estimate of E_q[log p(x|z)] and the exact KL, each (B,); and decoded.

        eps (B, L), the reparameterisation noise, is drawn here unless given. Under autocast the
        likelihood and the KL are computed in (at least) float32."""
        mu, log_var = (_at_least_float32(t) for t in self.encode(x, y))
        z = reparameterize(mu, log_var, eps)  # (B, L)
        decoded = _at_least_float32(self.decode(z, y))  # (B, D)
        return self.log_likelihood(x, decoded), gaussian_kl(mu, log_var), decoded

    def forward(self, x, y=None, eps=None):
        """(reconstruction means (B, C, H, W), loss): loss = mean over the batch of
        -(E_q[log p(x|z)] - beta KL), the negative (beta-weighted) ELBO in nats per image."""
        recon_ll, kl, decoded = self.elbo_terms(x, y, eps)
        loss = -(recon_ll - self.cfg.beta * kl).mean()
        return self.mean_image(decoded), loss

    @torch.no_grad()
    def importance_log_weights(self, x, n_samples: int, y=None):
        """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x), z_s ~ q(z|x): (S, B); and the KL."""
        mu, log_var = self.encode(x, y)  # (B, L)
        z = reparameterize(mu.expand(n_samples, *mu.shape), log_var.expand(n_samples, *mu.shape))
        flat_z = z.reshape(-1, z.shape[-1])  # (S*B, L)
        y_rep = None if y is None else y.repeat(n_samples)  # matches z's (S, B) order
        decoded = self.decode(flat_z, y_rep)  # (S*B, D)
        x_rep = x.expand(n_samples, *x.shape).reshape(-1, *x.shape[1:])  # (S*B, C, H, W)
        log_px_z = self.log_likelihood(x_rep, decoded).view(n_samples, -1)  # (S, B)
        zeros = torch.zeros_like(z)
        log_pz = gaussian_log_prob(z, zeros, zeros)  # standard normal prior, (S, B)
        log_qz = gaussian_log_prob(z, mu, log_var)  # (S, B)
        return log_px_z + log_pz - log_qz, log_px_z, gaussian_kl(mu, log_var)

    @torch.no_grad()
    def bounds(self, x, n_samples: int, y=None):
        """Per image (B,): the ELBO (S-sample mean of log p(x|z), closed-form KL) and IWAE_S.

        IWAE_S = logsumexp_s log w_s - log S  (Burda et al., 2016, eq. 8).
        """
        log_w, log_px_z, kl = self.importance_log_weights(x, n_samples, y)
        elbo = log_px_z.mean(0) - kl
        return elbo, iwae_bound(log_w, n_samples)

    @torch.no_grad()
    def sample(self, n: int, y=None):
        """x ~ p(x|z) means, z ~ N(0, I): (n, C, H, W). y (n,) picks the class of a CVAE."""
        z = torch.randn(n, self.cfg.latent_dim, device=self.encoder.head.weight.device)
        return self.mean_image(self.decode(z, y))
