"""Speed against the references, side by side in one run, printed as ratios (ours / reference).

1. One training step of the NumPy GAN (D step then G step, hand-written backward passes) against
   the same networks in PyTorch with autograd, both in float64 on one CPU thread.
2. A discriminator forward and backward with our SpectralNorm against
   torch.nn.utils.parametrizations.spectral_norm on the same layers.

The last line is JSON: {"project": "gan", "ratios": {...}}. Ratios above 1 mean ours is slower.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from gan2d import GAN2D, Adam, GAN2DConfig
from model import GANConfig, ImageGAN
from threadpoolctl import threadpool_limits


def best_time(fn, repeats: int = 5, number: int = 20) -> float:
    """Seconds per call: the best of `repeats` timings of `number` calls (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def bench_numpy_gan(batch: int = 256) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    config = GAN2DConfig()
    model = GAN2D(config, rng)
    opt_D = Adam(model.D.params(), model.D.grads(), 1e-3)
    opt_G = Adam(model.G.params(), model.G.grads(), 1e-3)
    x_real = rng.standard_normal((batch, 2))
    z = rng.standard_normal((batch, config.z_dim))

    def ours():
        model.discriminator_grads(x_real, z)
        opt_D.step()
        model.generator_grads(z)
        opt_G.step()

    def mlp(sizes):
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(torch.nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(torch.nn.LeakyReLU(config.slope))
        return torch.nn.Sequential(*layers).double()

    hidden = [config.hidden] * config.n_hidden
    G = mlp([config.z_dim, *hidden, 2])
    D = mlp([2 * config.pack, *hidden, 1])
    t_opt_G = torch.optim.Adam(G.parameters(), 1e-3, betas=(0.5, 0.999))
    t_opt_D = torch.optim.Adam(D.parameters(), 1e-3, betas=(0.5, 0.999))
    t_real, t_z = torch.tensor(x_real), torch.tensor(z)
    pairs = batch // config.pack

    def reference():
        with torch.no_grad():
            fake = G(t_z)
        logits = D(torch.cat([t_real, fake]).reshape(2 * pairs, 2 * config.pack))
        loss_D = F.softplus(-logits[:pairs]).mean() + F.softplus(logits[pairs:]).mean()
        t_opt_D.zero_grad()
        loss_D.backward()
        t_opt_D.step()
        loss_G = F.softplus(-D(G(t_z).reshape(pairs, 2 * config.pack))).mean()
        t_opt_G.zero_grad()
        loss_G.backward()
        t_opt_G.step()

    with threadpool_limits(limits=1, user_api="blas"):
        return best_time(ours), best_time(reference)


def bench_spectral_norm() -> tuple[float, float]:
    torch.manual_seed(0)
    ours = ImageGAN(GANConfig(model="dcgan", spectral_norm=True)).discriminator
    reference = ImageGAN(GANConfig(model="dcgan")).discriminator
    reference.features[3] = torch.nn.Identity()  # no batch norm, as with spectral norm
    for name in ("features.0", "features.2", "score"):
        layer = reference.get_submodule(name)
        torch.nn.utils.parametrizations.spectral_norm(layer)
    x = torch.rand(64, 1, 16, 16)

    def step(model):
        def run():
            model.zero_grad()
            model(x).sum().backward()

        return run

    return best_time(step(ours)), best_time(step(reference))


def main() -> None:
    torch.set_num_threads(1)
    ratios = {}
    ours, ref = bench_numpy_gan()
    print(f"NumPy GAN step (batch 256): ours {ours * 1e3:.2f} ms, torch {ref * 1e3:.2f} ms")
    ratios["numpy_gan_step_vs_torch_autograd"] = round(ours / ref, 3)
    ours, ref = bench_spectral_norm()
    print(
        f"SN discriminator fwd+bwd (64x16x16): ours {ours * 1e3:.2f} ms, torch {ref * 1e3:.2f} ms"
    )
    ratios["spectral_norm_vs_torch_parametrization"] = round(ours / ref, 3)
    print(json.dumps({"project": "gan", "ratios": ratios}))


if __name__ == "__main__":
    main()
