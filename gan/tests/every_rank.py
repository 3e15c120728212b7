"""train.py under torchrun, each rank also saving its own networks and optimisers at every
checkpoint (train.py itself writes rank 0's state only):

    python -m torch.distributed.run --nproc_per_node 2 tests/every_rank.py DUMP [train.py flags]

writes DUMP/rank0.pt, DUMP/rank1.pt; test_distributed.py compares them, to show that every rank
ends with the same parameters and buffers (batch-norm statistics, spectral norm's u and v).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project: train.py, model.py
import train  # noqa: E402

from shared.cli import cli_main  # noqa: E402

DUMP = Path(sys.argv[1])


class EveryRankState(train.TrainingState):
    def save(self, step: int, **extra) -> None:
        super().save(step, **extra)
        parts = {name: part.state_dict() for name, part in self.parts.items()}
        torch.save(parts, DUMP / f"rank{self.dist.rank}.pt")


if __name__ == "__main__":
    train.TrainingState = EveryRankState
    cli_main(train.main, train.TrainConfig, sys.argv[2:])
