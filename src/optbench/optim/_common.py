"""Pieces every optbench optimizer shares: argument checks with uniform messages, and the grouping of
tensors by (device, dtype) that the multi-tensor (``torch._foreach_*``) paths need.

Protocol the trainer relies on (both optional):
- ``set_lr_factor(factor)``: the configured lr schedule calls this once per epoch with the schedule's
  multiplier. Optimizers that own their learning rate (hypergradient alpha, YellowFin) implement it to scale
  what they learn instead of having ``param_groups[i]['lr']`` overwritten; others get
  ``lr = initial_lr * factor``.
- ``extras() -> dict[str, float | Tensor]``: named scalars logged per iteration (steps.csv) and as epoch
  means (metrics.csv), e.g. YellowFin's ``mu``. Tensors are fine: the trainer syncs them only when it logs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence

import torch


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_unit_interval(name: str, value: float) -> None:
    """Momentum-like coefficients: in [0, 1)."""
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def check_betas(name: str, betas: Sequence[float], length: int | None = None, distinct: bool = False) -> None:
    betas = tuple(betas)
    if length is not None and len(betas) != length:
        raise ValueError(f"{name} must have {length} entries, got {betas!r}")
    if not betas:
        raise ValueError(f"{name} must not be empty")
    for i, beta in enumerate(betas):
        check_unit_interval(f"{name}[{i}]", beta)
    if distinct and len(set(betas)) != len(betas):
        raise ValueError(f"{name} must not repeat a value (each beta is one velocity buffer), got {betas!r}")


def evaluate_closure(closure: Callable[[], Any] | None) -> Any:
    """``step(closure)``: re-evaluate the loss with gradients enabled (step itself runs under no_grad)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def adam_moments_foreach_(ms: list[torch.Tensor], vs: list[torch.Tensor], grads: list[torch.Tensor],
                          beta1: float, beta2: float) -> None:
    """Adam's moments in place, multi-tensor: m <- beta1 m + (1 - beta1) g, v <- beta2 v + (1 - beta2) g^2."""
    torch._foreach_lerp_(ms, grads, 1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)


def reject_sparse(grad: torch.Tensor, optimizer_name: str) -> None:
    if grad.is_sparse:
        raise RuntimeError(
            f"{optimizer_name} does not support sparse gradients; use a dense embedding "
            "(nn.Embedding(sparse=False)) or an optimizer built for sparse updates (torch.optim.SparseAdam)"
        )


def group_by_device_and_dtype(
    tensorlists: Sequence[Sequence[torch.Tensor]],
) -> dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]]:
    """Split parallel tensor lists (params, grads, states...) into buckets the foreach kernels accept."""
    buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = defaultdict(
        lambda: [[] for _ in tensorlists]
    )
    for items in zip(*tensorlists):
        key = (items[0].device, items[0].dtype)
        for bucket, item in zip(buckets[key], items):
            bucket.append(item)
    return dict(buckets)


def params_with_grad(group: dict, optimizer_name: str) -> Iterable[torch.Tensor]:
    """Parameters of a group that received a gradient this step (others are skipped)."""
    for p in group["params"]:
        if p.grad is not None:
            reject_sparse(p.grad, optimizer_name)
            yield p
