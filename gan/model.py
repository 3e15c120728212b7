"""Image GANs in PyTorch: an MLP GAN, DCGAN, LSGAN and WGAN-GP, with spectral normalisation
written by hand and an optional class condition.

The four models differ in two places only: the networks (MLP or convolutional, with or without
batch norm in the discriminator) and the loss the two players minimise. Both live here, in
that order: losses, the gradient penalty, spectral norm, the networks, and the GAN that holds
a generator and a discriminator.

Shapes: B = batch, Z = latent size, C = image channels, S = image side, K = classes, W = width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = ("gan", "dcgan", "lsgan", "wgan-gp")
LOSSES = ("non-saturating", "least-squares", "wasserstein", "hinge")
MODEL_LOSS = {  # the loss each model is known by; --loss overrides it
    "gan": "non-saturating",
    "dcgan": "non-saturating",
    "lsgan": "least-squares",
    "wgan-gp": "wasserstein",
}


@dataclass
class GANConfig:
    model: str = "dcgan"  # one of MODELS
    loss: str = "non-saturating"  # one of LOSSES
    image_size: int = 16  # S, a multiple of 4
    channels: int = 1  # C
    z_dim: int = 64  # Z
    width: int = 64  # W: channels of the first conv layer (x4 for MLP hidden units)
    n_classes: int = 0  # K > 0 makes both networks class-conditional
    spectral_norm: bool = False  # spectral norm on every layer of the discriminator


# ----------------------------------------------------------------------------- losses
# D(x) below is the discriminator's raw output (a logit, or a critic score), shape (B, 1).


def at_least_float32(x):
    """x in float32 when autocast made it bf16 or fp16 (float32 and float64 stay): the losses
    and the penalty are computed in full precision under mixed precision."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def discriminator_loss(kind: str, real, fake):
    """The discriminator's loss given its outputs on real and on generated images."""
    real, fake = at_least_float32(real), at_least_float32(fake)
    if kind == "non-saturating":  # -E[log sigmoid(D(x))] - E[log(1 - sigmoid(D(G(z))))]
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "least-squares":  # 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]  (Mao et al., 2017)
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()
    if kind == "wasserstein":  # E[D(G(z))] - E[D(x)]: minus the critic's estimate of W_1
        return fake.mean() - real.mean()
    if kind == "hinge":  # E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]  (Lim & Ye, 2017)
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    raise ValueError(f"unknown loss {kind!r}")


def generator_loss(kind: str, fake):
    """The generator's loss given the discriminator's outputs on generated images."""
    fake = at_least_float32(fake)
    if kind == "non-saturating":  # -E[log sigmoid(D(G(z)))], not E[log(1 - sigmoid(D(G(z))))]
        return F.softplus(-fake).mean()
    if kind == "least-squares":  # 1/2 E[(D(G(z)) - 1)^2]
        return 0.5 * ((fake - 1) ** 2).mean()
    if kind in ("wasserstein", "hinge"):  # -E[D(G(z))]
        return -fake.mean()
    raise ValueError(f"unknown loss {kind!r}")


def gradient_penalty(critic, real, fake, labels=None, epsilon=None, scale: float = 1.0):
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = eps x + (1 - eps) G(z)  (Gulrajani et al., 2017).

    create_graph=True keeps the gradient differentiable, so the penalty trains the critic.
    epsilon (B, 1, 1, 1) is drawn here unless given. `scale` is fp16's loss scale: the scores
    are multiplied by it before differentiating and the gradient divided by it after, so that
    the fp16 gradient does not underflow; an overflow gives an inf penalty, and the scaler
    then skips the step. The norm and the penalty are computed in float32 or more.
    """
    if epsilon is None:
        epsilon = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (epsilon * real + (1 - epsilon) * fake).requires_grad_(True)  # (B, C, S, S)
    scores = at_least_float32(critic(x_hat, labels))  # (B, 1)
    (grad,) = torch.autograd.grad(scores.sum() * scale, x_hat, create_graph=True)  # (B, C, S, S)
    norms = (at_least_float32(grad) / scale).flatten(1).norm(dim=1)  # (B,)
    return ((norms - 1) ** 2).mean()


# ----------------------------------------------------------------------------- spectral norm


class SpectralNorm(nn.Module):
    """A Linear or Conv2d layer whose weight is divided by its largest singular value.

    sigma(W) is estimated by power iteration (Miyato et al., 2018): with the weight as a matrix
    W of shape (out, in), repeat u <- W v / ||W v||, v <- W^T u / ||W^T u||; then
    sigma = u^T W v. One iteration per training forward suffices because W changes slowly and
    u, v persist between steps (15 at construction give a good start). u and v are not
    differentiated through: the gradient flows through W in both W and sigma = u^T W v.
    The layer is then 1-Lipschitz (in the spectral norm of its matrix), and a network of such
    layers with 1-Lipschitz activations is too.
    """

    def __init__(self, layer: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"SpectralNorm wraps Linear or Conv2d, got {type(layer).__name__}")
        self.layer = layer
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        weight = layer.weight
        u = weight.new_empty(weight.shape[0]).normal_()  # (out,)
        v = weight.new_empty(weight[0].numel()).normal_()  # (in*kh*kw,)
        self.register_buffer("u", F.normalize(u, dim=0, eps=eps))
        self.register_buffer("v", F.normalize(v, dim=0, eps=eps))
        self.power_iteration(15)

    def weight_matrix(self):
        return self.layer.weight.flatten(1)  # (out, in*kh*kw)

    @torch.no_grad()
    def power_iteration(self, n: int) -> None:
        W = self.weight_matrix()
        for _ in range(n):
            self.u.copy_(F.normalize(W @ self.v, dim=0, eps=self.eps))  # u <- W v / ||W v||
            self.v.copy_(F.normalize(W.T @ self.u, dim=0, eps=self.eps))  # v <- W^T u / ||.||

    def sigma(self):
        """u^T W v, differentiable in W only.

        u and v are cloned: the next forward updates them in place (the discriminator runs on
        real and fake batches before one backward), and autograd needs the values used here.
        """
        u, v = self.u.clone(), self.v.clone()
        return torch.dot(u, self.weight_matrix() @ v)

    def forward(self, x):
        # sigma in float32 under mixed precision too: autocast would run W v in bf16 or fp16.
        with torch.autocast(x.device.type, enabled=False):
            if self.training:
                self.power_iteration(self.n_power_iterations)
            weight = self.layer.weight / self.sigma()  # W_SN = W / sigma(W)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, weight, self.layer.bias)
        conv = self.layer
        return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap every Linear and Conv2d inside `module` (any discriminator) in SpectralNorm."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            setattr(module, name, SpectralNorm(child))
        else:
            apply_spectral_norm(child)
    return module


# ----------------------------------------------------------------------------- networks


def one_hot(labels, n_classes: int):
    return F.one_hot(labels, n_classes).float()  # (B, K)


class MLPGenerator(nn.Module):
    """The original GAN's generator: z (B, Z) [+ one-hot (B, K)] -> image (B, C, S, S)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        hidden = 4 * config.width
        n_pixels = config.channels * config.image_size**2
        self.net = nn.Sequential(
            nn.Linear(config.z_dim + config.n_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_pixels),
            nn.Tanh(),  # pixels in [-1, 1], like the scaled training images
        )

    def forward(self, z, labels=None):  # z: (B, Z)
        if self.config.n_classes:
            z = torch.cat([z, one_hot(labels, self.config.n_classes)], dim=1)  # (B, Z+K)
        c, s = self.config.channels, self.config.image_size
        return self.net(z).view(-1, c, s, s)  # (B, C, S, S)


class MLPDiscriminator(nn.Module):
    """image (B, C, S, S) [+ one-hot (B, K)] -> score (B, 1)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        hidden = 4 * config.width
        n_pixels = config.channels * config.image_size**2
        self.net = nn.Sequential(
            nn.Linear(n_pixels + config.n_classes, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x, labels=None):  # x: (B, C, S, S)
        h = x.flatten(1)  # (B, C*S*S)
        if self.config.n_classes:
            h = torch.cat([h, one_hot(labels, self.config.n_classes)], dim=1)
        return self.net(h)  # (B, 1)


class DCGenerator(nn.Module):
    """DCGAN's generator (Radford et al., 2016): project and reshape, then two transposed
    convolutions that each double the side; batch norm and ReLU between, tanh at the end.
    """

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        w, self.start = config.width, config.image_size // 4  # S/4: two doublings reach S
        self.project = nn.Sequential(
            nn.Linear(config.z_dim + config.n_classes, 2 * w * self.start**2, bias=False),
            nn.Unflatten(1, (2 * w, self.start, self.start)),  # (B, 2W, S/4, S/4)
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False),  # (B, W, S/2, S/2)
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.ConvTranspose2d(w, config.channels, 4, stride=2, padding=1),  # (B, C, S, S)
            nn.Tanh(),
        )

    def forward(self, z, labels=None):  # z: (B, Z)
        if self.config.n_classes:
            z = torch.cat([z, one_hot(labels, self.config.n_classes)], dim=1)  # (B, Z+K)
        return self.upsample(self.project(z))


class DCDiscriminator(nn.Module):
    """Two strided convolutions that each halve the side, LeakyReLU(0.2), then one linear score.

    Batch norm (DCGAN's recipe) on the second convolution only when `batch_norm`: the gradient
    penalty is per sample and spectral norm already controls the scale, so those go without.
    A class condition enters as K constant one-hot planes beside the image channels.
    """

    def __init__(self, config: GANConfig, batch_norm: bool):
        super().__init__()
        self.config = config
        w, quarter = config.width, config.image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(config.channels + config.n_classes, w, 4, stride=2, padding=1),  # S/2
            nn.LeakyReLU(0.2),
            # No bias before batch norm, which subtracts it again (as in the generator).
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=not batch_norm),  # (B, 2W, S/4, S/4)
            nn.BatchNorm2d(2 * w) if batch_norm else nn.Identity(),
            nn.LeakyReLU(0.2),
            nn.Flatten(),  # (B, 2W*(S/4)^2)
        )
        self.score = nn.Linear(2 * w * quarter**2, 1)

    def forward(self, x, labels=None):  # x: (B, C, S, S)
        if self.config.n_classes:
            planes = one_hot(labels, self.config.n_classes)[:, :, None, None]  # (B, K, 1, 1)
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], dim=1)  # (B, C+K, S, S)
        return self.score(self.features(x))  # (B, 1)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------- the GAN


class ImageGAN(nn.Module):
    """A generator and a discriminator (a critic for WGAN-GP) built from one config."""

    def __init__(self, config: GANConfig):
        super().__init__()
        if config.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {config.image_size}")
        self.config = config
        if config.model == "gan":
            self.generator = MLPGenerator(config)
            self.discriminator = MLPDiscriminator(config)
        else:
            batch_norm = config.model in ("dcgan", "lsgan") and not config.spectral_norm
            self.generator = DCGenerator(config)
            self.discriminator = DCDiscriminator(config, batch_norm)
            self.apply(dcgan_init)
        if config.spectral_norm:
            apply_spectral_norm(self.discriminator)

    @torch.no_grad()
    def sample(self, z, labels=None, batch_size: int = 256):
        """Images in [0, 1] from latents z (B, Z) (and labels (B,) when conditional)."""
        images = []
        for start in range(0, len(z), batch_size):
            part = slice(start, start + batch_size)
            images.append(self.generator(z[part], None if labels is None else labels[part]))
        return (torch.cat(images) + 1) / 2  # tanh's [-1, 1] -> [0, 1]


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def latent_walk(z_start, z_end, n: int):
    """n latents on the great circle from z_start to z_end (slerp, White 2016), (n, Z).

    Gaussian latents concentrate near a sphere of radius sqrt(Z); a straight line between two
    of them cuts through its inside, where the generator saw few latents in training.
    """
    t = torch.linspace(0, 1, n, dtype=z_start.dtype)[:, None]  # (n, 1)
    cos = F.cosine_similarity(z_start, z_end, dim=0).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-6:
        return (1 - t) * z_start + t * z_end
    return (torch.sin((1 - t) * omega) * z_start + torch.sin(t * omega) * z_end) / math.sin(
        omega.item()
    )
