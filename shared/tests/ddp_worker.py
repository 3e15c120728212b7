"""Run by test_distributed.py under `torchrun --nproc_per_node 2`: one case per argv[1]."""

import sys
from pathlib import Path

import torch

from shared.runtime import init_distributed
from shared.state import TrainingState, read_state


def batch_norm_step(out: Path, dist) -> None:
    """One SGD step of conv + batch norm on this rank's half of a fixed batch of 8."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(8, 3, 6, 6)
    model = dist.wrap(dist.sync_batch_norm(model))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    y = model(dist.shard(x))
    loss = (y**2).mean()
    loss.backward()
    optimizer.step()
    torch.save({"y": y.detach(), "state": dist.unwrap(model).state_dict()}, out / f"{dist.rank}.pt")


def save_then_resume(out: Path, dist) -> None:
    """Save mid-run, draw on; resume in a fresh state and draw again: each rank's draws agree."""
    cfg = {"seed": 0}
    torch.manual_seed(100 + dist.rank)  # per-rank randomness, as dropout has
    weights = torch.nn.Linear(2, 2)
    state = TrainingState(out / "state.pt", cfg, dist=dist, model=weights)
    state.save(1)
    after_save = torch.rand(3)
    torch.manual_seed(999)
    dist.barrier()
    state.restore(dict(read_state(out / "state.pt"), path=str(out / "state.pt")))
    torch.save({"after_save": after_save, "after_restore": torch.rand(3)}, out / f"{dist.rank}.pt")


if __name__ == "__main__":
    dist = init_distributed("cpu")
    {"batch_norm": batch_norm_step, "state": save_then_resume}[sys.argv[1]](Path(sys.argv[2]), dist)
    dist.close()
