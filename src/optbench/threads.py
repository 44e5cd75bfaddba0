"""How many CPU threads a run's tensor operations use (``trainer.threads``).

PyTorch starts one OpenMP thread per core. For a small model each operation is too short to split, and when
another process keeps a core busy the threads spin waiting for each other: the digits MLP trained at 7 it/s with
2 threads on a loaded 2-core machine and at 300 it/s with 1. So ``auto`` gives models under 1M parameters one
thread, and larger ones the cores that are idle (the core count minus the 1-minute load average, at least one).
An explicit OMP_NUM_THREADS in the environment, or a number, is used as it is.
"""

from __future__ import annotations

import os

import torch

SMALL_MODEL = 1_000_000


def idle_cores() -> int:
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def choose(setting, model: torch.nn.Module, device: torch.device) -> int | None:
    """The thread count for this run (None: leave torch's choice)."""
    if device.type != "cpu":
        return None
    if setting != "auto":
        return int(setting)
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        return 1
    return idle_cores()


def apply(setting, model: torch.nn.Module, device: torch.device) -> None:
    threads = choose(setting, model, device)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
