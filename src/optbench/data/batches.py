"""Device-resident batching: the dataset is one tensor on the training device, an epoch is an on-device
permutation, a batch is an index_select. No DataLoader, no worker processes, no host round trips."""

from __future__ import annotations

from typing import Iterator

import torch


def check_val_fraction(val_fraction: float) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"task.val_fraction must be a number in [0, 1), got {val_fraction!r}")


def split_train_val(n: int, val_fraction: float) -> tuple[slice, slice]:
    """First (1 - val_fraction) of the official training set trains, the last val_fraction validates."""
    check_val_fraction(val_fraction)
    n_val = int(round(n * val_fraction))
    return slice(0, n - n_val), slice(n - n_val, n)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device,
                     drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Index tensors of one shuffled epoch; the permutation is drawn on the generator's device."""
    perm = torch.randperm(n, generator=generator, device=generator.device).to(device, non_blocking=True)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield perm[start:start + batch_size]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def sequential_batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))
