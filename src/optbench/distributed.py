"""Data parallelism through PyTorch's own engine: ``torchrun --nproc_per_node=N main.py ...`` starts N
processes; each joins the process group (NCCL on GPUs, gloo on CPU), wraps the model in
DistributedDataParallel, and trains on its slice of every global batch. Nothing here runs without torchrun;
under torchrun it runs also for one process (``--nproc_per_node=1``: one process group, DDP over one device, the
same math as a plain run), so the data-parallel path can be checked, and its overhead measured, on one GPU.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (data parallel even with one process)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Context()


def from_environment() -> Context:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK; torchrun also sets TORCHELASTIC_RUN_ID), or a
    single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ
    if world <= 1 and not launched:
        return SINGLE
    return Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")), launched)


def setup(ctx: Context, device: torch.device) -> None:
    """Join the process group once per process (a Hydra sweep under torchrun reuses it for every run)."""
    if ctx.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
        atexit.register(_teardown)


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(ctx: Context, tensor: torch.Tensor) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def agree(ctx: Context, flag: bool) -> bool:
    """Rank 0's decision, known to every process (a torchrun job acts as one)."""
    if not ctx.enabled:
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def any_process(ctx: Context, flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on some process (one small all-reduce)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(ctx, value).item() > 0)
