"""Multi-process training under ``torchrun``: process group set-up and the few collectives used.

``torchrun --nproc_per_node K -m ctdiff train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them training runs as one process. Backend: NCCL when the device is CUDA, gloo on CPU. Only rank 0
writes files (run dir, checkpoints, plots, previews); see :attr:`DistInfo.is_main`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda (this process' local GPU) if available, else cpu."""
    if isinstance(device, torch.device):
        return device
    from ctdiff.validate import device as valid_device

    device = valid_device(device)  # ConfigError for an unknown device or cuda without CUDA
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return dev


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Read torchrun's environment; start the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
        started = True
    return DistInfo(rank, world, local_rank, dev, started)


def shutdown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across(info: DistInfo, value: float) -> float:
    """Average a Python float over all ranks (identity in one process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def broadcast_flag(info: DistInfo, flag: bool) -> bool:
    """Rank 0's boolean on every rank (e.g. 'stop now')."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=info.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def add_device_arguments(parser) -> None:
    """``--device`` and ``--threads`` for the commands that run the network (train, sample)."""
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for PyTorch (default: its own choice; 1 is often faster on a busy shared machine)",
    )


def apply_threads(args) -> None:
    """Set PyTorch's CPU thread count from ``--threads`` (called by a CLI's run(), never by the library)."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
