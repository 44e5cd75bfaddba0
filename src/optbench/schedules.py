"""Per-epoch learning-rate schedules as multipliers of the initial lr (the AggMo configs' step decay and the
usual alternatives). The trainer hands the factor to the optimizer (optbench.optim.protocol.set_lr_factor), so
optimizers that learn their own lr (hypergradient, YellowFin) are scaled, not overwritten."""

from __future__ import annotations

import math
from typing import Mapping

SCHEDULES = ("constant", "step", "exponential", "cosine")


def lr_factor(schedule: Mapping, epoch: int, total_epochs: int) -> float:
    """Multiplier for training epoch ``epoch`` (1-based): step decay applies after each milestone epoch has
    completed, as torch's MultiStepLR stepped once per epoch."""
    name = schedule.get("name") or "constant"
    decay = float(schedule.get("lr_decay") if schedule.get("lr_decay") is not None else 0.1)
    if name == "constant":
        return 1.0
    if name == "step":
        return decay ** sum(1 for m in (schedule.get("milestones") or []) if m < epoch)
    if name == "exponential":
        return decay ** (epoch - 1)
    if name == "cosine":
        floor = float(schedule.get("min_factor") or 0.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / total_epochs))
    raise ValueError(f"lr_schedule.name={name!r} is not known; valid: {', '.join(SCHEDULES)}")
