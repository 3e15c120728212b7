"""Seeds, devices, threads, and the few lines that let any train.py run under `torchrun`.

torch is imported inside the functions that need it, so NumPy projects can seed without it.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.errors import UserError


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and (if it is loaded) torch; return a NumPy generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def get_device(name: str = "auto"):
    """`auto` picks cuda, then mps, then cpu; an explicit device must exist."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPUs")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' asked for, but MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device {name!r} (use auto, cpu, cuda, cuda:N or mps)")
    return device


def set_threads(n: int) -> None:
    """Use n intra-op threads in torch (n <= 0 keeps torch's default)."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


def free_memory_bytes(device=None) -> int:
    """Memory free now: on a CUDA device its free memory, else the machine's available RAM."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def check_fits_in_memory(n_bytes: float, what: str, device=None) -> None:
    """A UserError before allocating, when an estimate of what a run needs exceeds free memory.

    `what` names the flags that decide the size (`--hidden 100000 100000`), so the message says
    which one to lower: "error: --hidden 100000 needs about 80.0 GB, more than the 20.3 GB free".
    """
    free = free_memory_bytes(device)
    if n_bytes > free:
        raise UserError(
            f"{what} needs about {n_bytes / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB free"
        )


def count_parameters(build) -> int:
    """Parameters of the torch module `build()` makes, counted on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())


@dataclass
class Distributed:
    """Where this process sits in a `torchrun` job; a single process when `enabled` is False."""

    enabled: bool
    rank: int
    local_rank: int
    world_size: int
    device: Any

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        """DistributedDataParallel around the model when distributed, else the model itself."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    @staticmethod
    def unwrap(model):
        return getattr(model, "module", model)

    def sampler(self, dataset, shuffle: bool = True, seed: int = 0):
        """A sampler giving each rank its own shard, or None when not distributed."""
        if not self.enabled:
            return None
        from torch.utils.data.distributed import DistributedSampler

        return DistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=seed
        )

    def shard(self, batch):
        """This rank's contiguous share of a global batch (a tensor, array or list of indices).

        Every rank draws the same global batch from the same generator and keeps its own slice,
        so N processes with --batch-size B see exactly the examples of one process with B.
        """
        if not self.enabled:
            return batch
        if len(batch) % self.world_size:
            raise UserError(
                f"a batch of {len(batch)} does not split over {self.world_size} processes: "
                f"make --batch-size a multiple of {self.world_size}"
            )
        share = len(batch) // self.world_size
        return batch[self.rank * share : (self.rank + 1) * share]

    def sync_batch_norm(self, model):
        """Batch norm over the global batch: every BatchNorm layer pools its statistics over ranks.

        torch's SyncBatchNorm needs a GPU; this one (an all-reduce of each channel's count, sum
        and sum of squares, differentiable) runs on gloo too, so N processes normalise exactly as
        one process with the whole batch, and every rank keeps the same running statistics.
        Without distribution the model is returned unchanged.
        """
        if not self.enabled:
            return model
        import torch

        for name, child in model.named_children():
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(model, name, _global_batch_norm_class().replacing(child))
            else:
                self.sync_batch_norm(child)
        return model

    def all_reduce_mean(self, value) -> float:
        """The mean of a number (or scalar tensor) over all ranks."""
        if not self.enabled:
            return float(value)
        import torch
        import torch.distributed as torch_dist

        tensor = torch.as_tensor(value, dtype=torch.float64, device=self.device).clone()
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return float(tensor) / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as torch_dist

            torch_dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as torch_dist

            torch_dist.destroy_process_group()


def launched_world_size() -> int:
    """How many processes torchrun started for this job (1 without torchrun), before joining it."""
    if "RANK" not in os.environ:
        return 1
    return max(int(os.environ.get("WORLD_SIZE", "1")), 1)


def init_distributed(device_name: str = "auto") -> Distributed:
    """Join the process group that `torchrun` describes in the environment, if any.

    torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; NCCL is used on GPUs and gloo on the CPU.
    Each GPU process takes the device of its local rank.
    """
    world_size = launched_world_size()
    if world_size == 1:
        return Distributed(False, 0, 0, 1, get_device(device_name))
    import torch
    import torch.distributed as torch_dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = get_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return Distributed(True, rank, local_rank, world_size, device)


@functools.cache
def _global_batch_norm_class():
    # Built on first use, so that importing this module needs no torch.
    import torch
    import torch.distributed.nn.functional as dist_fn

    class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
        """Batch norm whose training statistics are those of the batch of all ranks together."""

        @classmethod
        def replacing(cls, old):
            new = cls(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats)
            new.load_state_dict(old.state_dict())
            new.to(next(old.parameters(), old.running_mean).device)
            new.train(old.training)
            return new

        def _check_input_dim(self, x):
            if x.dim() < 2:
                raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

        def forward(self, x):  # x: (B, C, ...)
            if not (self.training or not self.track_running_stats):
                return super().forward(x)
            dims = [0, *range(2, x.dim())]
            count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device)
            x32 = x.float()
            # One all-reduce of (sum, sum of squares, count); its backward all-reduces gradients.
            stats = torch.cat([x32.sum(dims), (x32 * x32).sum(dims), count.reshape(1)])
            with warnings.catch_warnings():  # deprecated for a functional API, same result
                warnings.simplefilter("ignore", FutureWarning)
                stats = dist_fn.all_reduce(stats)
            c = x.shape[1]
            n = stats[-1]
            mean = stats[:c] / n
            var = stats[c : 2 * c] / n - mean * mean  # biased, as batch norm normalises
            if self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked += 1
                    momentum = (
                        1.0 / float(self.num_batches_tracked)
                        if self.momentum is None
                        else self.momentum
                    )
                    unbiased = var * n / (n - 1).clamp(min=1)
                    self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                    self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
            shape = [1, c] + [1] * (x.dim() - 2)
            y = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
            if self.affine:
                y = y * self.weight.view(shape) + self.bias.view(shape)
            return y.to(x.dtype)

    return GlobalBatchNorm


# ----------------------------------------------------------------------------- mixed precision

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PRECISION_HELP = (
    "autocast dtype: auto = bf16 on CUDA devices that support it, else fp16 with a gradient "
    "scaler on CUDA, fp32 (no autocast) on the CPU and MPS; bf16 also runs on the CPU"
)


@dataclass
class MixedPrecision:
    """Autocast and, for fp16, a gradient scaler; with fp32 every method is a plain no-op.

    Use: `with amp.autocast(): loss = ...`, then `amp.backward(loss)`, `amp.unscale(opt)` before
    clipping, `amp.step(opt)`. Losses and normalisations are computed in float32 by the models.
    """

    name: str
    device_type: str
    scaler: Any = None

    @property
    def dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self):
        import contextlib

        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()


def mixed_precision(name: str, device) -> MixedPrecision:
    """Resolve --precision for a device (see PRECISION_HELP); an impossible one is a UserError."""
    import torch

    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r} (use {', '.join(PRECISIONS)})")
    kind = device.type
    if name == "auto":
        if kind != "cuda":
            name = "fp32"
        else:
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and kind != "cuda":
        raise UserError(f"--precision fp16 needs a CUDA device, not {kind}")
    if name == "bf16" and kind == "mps":
        raise UserError("--precision bf16 is not supported on MPS here: use fp32")
    if name == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU does not support bf16: use --precision fp16")
    scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None
    return MixedPrecision(name, kind, scaler)
