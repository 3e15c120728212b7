"""demo.py's hand-written backprop step equals torch autograd, number for number."""

import numpy as np
import torch
from demo import X, Y, backprop_step, initial_weights


def test_demo_intermediates_and_gradients_match_autograd():
    weights = initial_weights(0)
    ours = backprop_step(weights, lr=1.0)

    w = {k: torch.tensor(v, requires_grad=True) for k, v in weights.items()}
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    z1 = x @ w["W1"] + w["b1"]
    h = torch.sigmoid(z1)
    z2 = h @ w["W2"] + w["b2"]
    for t in (z1, h, z2):
        t.retain_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z2, y)
    loss.backward()

    reference = {
        "z1": z1, "h": h, "z2": z2, "p": torch.sigmoid(z2), "loss": loss,
        "dL/dz2": z2.grad, "dL/dh": h.grad, "dL/dz1": z1.grad,
        **{f"dL/d{k}": v.grad for k, v in w.items()},
        **{f"new {k}": v - v.grad for k, v in w.items()},
    }  # fmt: skip
    assert reference.keys() == ours.keys()
    for name, value in reference.items():
        assert np.allclose(ours[name], value.detach().numpy(), rtol=0, atol=1e-12), name
