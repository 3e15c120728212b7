"""Every optimizer and schedule equals its torch.optim counterpart, step for step."""

import numpy as np
import pytest
import torch
from optim import SGD, Adam, AdamW, RMSProp, lr_factor

CASES = {
    "sgd": (lambda p: SGD(p, 0.1), lambda p: torch.optim.SGD(p, 0.1)),
    "sgd_weight_decay": (
        lambda p: SGD(p, 0.1, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, 0.1, weight_decay=0.01),
    ),
    "momentum": (
        lambda p: SGD(p, 0.1, momentum=0.9),
        lambda p: torch.optim.SGD(p, 0.1, momentum=0.9),
    ),
    "nesterov": (
        lambda p: SGD(p, 0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, 0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    "rmsprop": (lambda p: RMSProp(p, 0.01), lambda p: torch.optim.RMSprop(p, 0.01)),
    "adam": (
        lambda p: Adam(p, 0.01, weight_decay=0.01),
        lambda p: torch.optim.Adam(p, 0.01, weight_decay=0.01),
    ),
    "adamw": (
        lambda p: AdamW(p, 0.01, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, 0.01, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_optimizer_matches_torch_optim_over_several_steps(name):
    make_ours, make_ref = CASES[name]
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    grads = [np.zeros_like(v) for v in values]
    ref_params = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    ours, ref = make_ours(list(zip(values, grads))), make_ref(ref_params)
    for _ in range(6):
        for g, p in zip(grads, ref_params):
            g[...] = rng.standard_normal(g.shape)  # the same gradient for both
            p.grad = torch.from_numpy(g.copy())
        ours.step()
        ref.step()
    for v, p in zip(values, ref_params):
        assert np.allclose(v, p.detach().numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_lr_schedule_matches_torch_scheduler(schedule):
    epochs = 12
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=1.0)
    if schedule == "step":
        ref = torch.optim.lr_scheduler.StepLR(optimizer, step_size=epochs // 3, gamma=0.5)
    else:
        ref = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    for epoch in range(epochs):
        assert abs(lr_factor(schedule, epoch, epochs) - optimizer.param_groups[0]["lr"]) < 1e-12
        optimizer.step()
        ref.step()
