import numpy as np
import pytest
import torch

from shared.errors import UserError
from shared.runtime import (
    check_fits_in_memory,
    count_parameters,
    get_device,
    init_distributed,
    seed_everything,
)


def test_seeding_makes_numpy_and_torch_repeatable():
    seed_everything(7)
    first = (np.random.rand(3), torch.rand(3))
    rng = seed_everything(7)
    second = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(first[0], second[0])
    assert torch.equal(first[1], second[1])
    assert rng.random() == np.random.default_rng(7).random()


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert get_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device("auto").type == "cpu"


def test_unknown_or_absent_device_is_a_user_error(monkeypatch):
    with pytest.raises(UserError, match="unknown device"):
        get_device("tpu9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        get_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="only 1 GPUs"):
        get_device("cuda:3")


def test_memory_check_names_the_flag_and_counting_allocates_nothing():
    with pytest.raises(
        UserError, match=r"^--hidden 10 needs about 1000000000.0 GB, more than the [0-9.]+ GB free$"
    ):
        check_fits_in_memory(1e18, "--hidden 10")
    check_fits_in_memory(1024, "--hidden 10")
    # 10^6 x 10^6 floats would be 4 TB; on the meta device it is only counted.
    assert count_parameters(lambda: torch.nn.Linear(10**6, 10**6)) == 10**12 + 10**6


def test_without_torchrun_distributed_is_a_single_main_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    dist = init_distributed("cpu")
    model = torch.nn.Linear(2, 2)
    assert not dist.enabled and dist.is_main and dist.world_size == 1
    assert dist.wrap(model) is model and dist.unwrap(model) is model
    assert dist.sampler(list(range(4))) is None
    assert dist.all_reduce_mean(3.0) == 3.0


def _distributed_worker(rank, world_size, port, results):
    import os

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    dist = init_distributed("cpu")
    torch.manual_seed(0)
    model = dist.wrap(torch.nn.Linear(3, 1, bias=False))
    data = torch.arange(12.0).reshape(4, 3)
    shard = list(iter(dist.sampler(list(range(4)), shuffle=False)))
    loss = model(data[shard]).pow(2).mean()
    loss.backward()  # DDP averages the gradients of the two shards
    results[rank] = (
        dist.all_reduce_mean(float(rank)),
        dist.unwrap(model).weight.grad.clone(),
        dist.is_main,
    )
    dist.close()


def test_two_gloo_processes_average_gradients_like_one_process_on_the_whole_batch():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_distributed_worker, args=(2, port, results), nprocs=2, join=True)
    torch.manual_seed(0)
    single = torch.nn.Linear(3, 1, bias=False)
    single(torch.arange(12.0).reshape(4, 3)).pow(2).mean().backward()
    for rank in (0, 1):
        mean_rank, grad, is_main = results[rank]
        assert mean_rank == 0.5 and is_main == (rank == 0)
        torch.testing.assert_close(grad, single.weight.grad)
