import numpy as np
import pytest
import torch

from shared.errors import UserError
from shared.runtime import get_device, init_distributed, seed_everything


def test_seeding_makes_numpy_and_torch_repeatable():
    seed_everything(7)
    first = (np.random.rand(3), torch.rand(3))
    rng = seed_everything(7)
    second = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(first[0], second[0])
    assert torch.equal(first[1], second[1])
    assert rng.random() == np.random.default_rng(7).random()


def test_auto_device_falls_back_to_what_exists():
    device = get_device("auto")
    if not torch.cuda.is_available():
        assert device.type in ("cpu", "mps")


def test_unknown_or_absent_device_is_a_user_error():
    with pytest.raises(UserError, match="unknown device"):
        get_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            get_device("cuda")


def test_without_torchrun_distributed_is_a_single_main_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    dist = init_distributed("cpu")
    model = torch.nn.Linear(2, 2)
    assert not dist.enabled and dist.is_main and dist.world_size == 1
    assert dist.wrap(model) is model and dist.unwrap(model) is model
    assert dist.sampler(list(range(4))) is None
    assert dist.all_reduce_mean(3.0) == 3.0
