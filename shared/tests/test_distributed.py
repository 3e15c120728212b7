"""Sharding, global batch norm, per-rank generators and mixed precision for torchrun runs."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from shared.errors import CheckpointError, UserError
from shared.runtime import Distributed, mixed_precision
from shared.state import TrainingState, load_for_resume, read_state, write_state
from shared.testing import assert_tensors_close, run_torchrun

HERE = Path(__file__).parent


def test_each_rank_takes_its_contiguous_share_of_the_global_batch():
    batch = torch.arange(6)
    shares = [Distributed(True, r, r, 3, torch.device("cpu")).shard(batch) for r in range(3)]
    assert [s.tolist() for s in shares] == [[0, 1], [2, 3], [4, 5]]
    assert Distributed(False, 0, 0, 1, None).shard(batch) is batch
    with pytest.raises(UserError, match="make --batch-size a multiple of 4"):
        Distributed(True, 0, 0, 4, None).shard(batch)


def test_two_processes_batch_norm_exactly_as_one_process_with_the_whole_batch(tmp_path):
    run_torchrun(HERE, "ddp_worker.py", "batch_norm", tmp_path, timeout=120)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(8, 3, 6, 6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    y = model(x)
    (y**2).mean().backward()
    optimizer.step()
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1)]
    assert_tensors_close(torch.cat([r["y"] for r in ranks]), y.detach(), atol=1e-6)
    for rank in ranks:  # the same step, and the same running statistics, on every rank
        assert_tensors_close(rank["state"], model.state_dict(), atol=1e-6)


def test_plain_batch_norm_per_rank_would_differ(tmp_path):
    # The check above can fail: per-rank statistics of half batches are not the global ones.
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(4)
    x = torch.randn(8, 4, 4, 4) + torch.arange(8.0).view(8, 1, 1, 1)
    assert not torch.allclose(bn(x)[:4], bn(x[:4]), atol=1e-3)


def test_each_rank_gets_its_own_generators_back_and_a_one_process_resume_is_refused(tmp_path):
    run_torchrun(HERE, "ddp_worker.py", "state", tmp_path, timeout=120)
    draws = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1)]
    for rank in draws:
        assert torch.equal(rank["after_save"], rank["after_restore"])
    assert not torch.equal(draws[0]["after_save"], draws[1]["after_save"])
    ckpt = dict(read_state(tmp_path / "state.pt"), path=str(tmp_path / "state.pt"))
    assert len(ckpt["rng_ranks"]) == 2
    state = TrainingState(tmp_path / "again.pt", {"seed": 0}, model=torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="resume it with torchrun --nproc_per_node 2"):
        state.restore(ckpt)


def test_a_resume_with_another_process_count_is_refused_before_the_run_starts(
    tmp_path, monkeypatch
):
    # load_for_resume runs before start_run rewrites config.json, so it must refuse already.
    cfg = SimpleNamespace(resume=True, out=str(tmp_path), seed=0)
    saved = {"step": 3, "train_config": {"seed": 0}, "rng": {}, "rng_ranks": [{}, {}]}
    write_state(tmp_path / "model.pt", saved)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(CheckpointError, match="resume it with torchrun --nproc_per_node 2"):
        load_for_resume(cfg, tmp_path, "model.pt", must_match=("seed",))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert load_for_resume(cfg, tmp_path, "model.pt", must_match=("seed",))["step"] == 3
    write_state(tmp_path / "model.pt", {"step": 3, "train_config": {"seed": 0}, "rng": {}})
    with pytest.raises(CheckpointError, match="written by one process: resume it without"):
        load_for_resume(cfg, tmp_path, "model.pt", must_match=("seed",))


def test_precision_auto_is_fp32_on_the_cpu_and_bf16_autocasts_there():
    cpu = torch.device("cpu")
    assert mixed_precision("auto", cpu).name == "fp32"
    with mixed_precision("fp32", cpu).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with mixed_precision("bf16", cpu).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        mixed_precision("fp16", cpu)


def test_precision_auto_on_cuda_picks_bf16_where_supported_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert mixed_precision("auto", torch.device("cuda")).name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: "scaler")
    amp = mixed_precision("auto", torch.device("cuda"))
    assert amp.name == "fp16" and amp.scaler == "scaler"
