"""Device-resident batching: the dataset is one tensor on the training device, an epoch is an on-device
permutation, a batch is an index_select. No DataLoader, no worker processes, no host round trips."""

from __future__ import annotations

from typing import Iterator

import torch


def check_val_fraction(val_fraction: float) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"task.val_fraction must be a number in [0, 1), got {val_fraction!r}")


VAL_SPLITS = ("held_out", "test")


def check_val_split(task: dict) -> str:
    """``task.val_split``: what 'val' evaluates, the held-out end of the training set (null or held_out) or the
    official test set (``test``, as the hypergradient reference reports), which needs val_fraction 0."""
    choice = task.get("val_split") or "held_out"
    if choice not in VAL_SPLITS:
        raise ValueError(f"task.val_split={choice!r} is not known; valid: {', '.join(VAL_SPLITS)}")
    if choice == "test" and float(task.get("val_fraction") or 0.0) != 0.0:
        raise ValueError(f"task.val_split=test validates on the test set, so task.val_fraction must be 0 (got "
                         f"{task['val_fraction']}); set task.val_fraction=0")
    return choice


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
