"""How the trainer talks to an optimizer beyond ``torch.optim.Optimizer``: four optional methods.

Every optimizer in optbench.optim has them (``PaperOptimizer`` gives the defaults, optimizers that need the
trainer's help override them); torch's own optimizers get the same defaults through the functions here, so
the trainer never asks which optimizer it holds.

- ``set_lr_factor(factor)``: the lr schedule's multiplier for the coming epoch. Default: each group's
  lr = initial lr * factor. Optimizers that learn their lr (hypergradient alpha, YellowFin's tuned lr) scale
  what they learned instead of having it overwritten.
- ``extras() -> dict[str, float | Tensor]``: named scalars logged per step (steps.csv) and as epoch means
  (metrics.csv), e.g. YellowFin's ``mu``. Tensors are fine: the trainer reads them only when it logs.
- ``plan(total_steps)``: how many steps the run will take; decides whether compiling a fused CPU kernel pays
  off (optim/_fused.py).
- ``attach_gradient_delay(delay)``: the run simulates asynchronous workers (optbench.staleness); an optimizer
  that measures the momentum asynchrony adds (closed-loop YellowFin) keeps a handle on the fresh gradients.
"""

from __future__ import annotations

from typing import Any

import torch


def set_lr_factor(optimizer: torch.optim.Optimizer, factor: float) -> None:
    if hasattr(optimizer, "set_lr_factor"):
        optimizer.set_lr_factor(factor)
    else:
        scale_initial_lr(optimizer, factor)


def scale_initial_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """The default schedule step: each group's lr = its initial lr * factor."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * float(factor)


def extras(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    method = getattr(optimizer, "extras", None)
    return dict(method()) if method is not None else {}


def plan(optimizer: torch.optim.Optimizer, total_steps: int | None) -> None:
    if hasattr(optimizer, "plan"):
        optimizer.plan(total_steps)


def attach_gradient_delay(optimizer: torch.optim.Optimizer, delay: Any) -> None:
    if hasattr(optimizer, "attach_gradient_delay"):
        optimizer.attach_gradient_delay(delay)
