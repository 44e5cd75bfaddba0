"""Learning-rate schedules as multipliers of the initial lr (the AggMo configs' step decay, the usual
alternatives, linear warmup, and reduce-on-plateau). The trainer hands the factor to the optimizer
(optbench.optim.protocol.set_lr_factor), so optimizers that learn their own lr (hypergradient, YellowFin) are
scaled, not overwritten.

A schedule counts epochs (``unit: epoch``, the default: the factor is set once per epoch) or optimizer steps
(``unit: step``: milestones, the exponential decay and the cosine period are in steps, and the factor is set
before every step). ``warmup_steps: N`` multiplies any schedule by (t + 1) / N for the first N steps (t = steps
taken before this one), so the first step uses 1/N of the lr and step N the full lr; it is applied per step.
``plateau`` is torch's ReduceLROnPlateau rule, kept as a factor with its state in the checkpoint.
"""

from __future__ import annotations

import math
from typing import Mapping

from optbench.rundir import higher_is_better

SCHEDULES = ("constant", "step", "exponential", "cosine", "plateau")
UNITS = ("epoch", "step")
PLATEAU_DEFAULTS = {"factor": 0.1, "patience": 10, "threshold": 1e-4, "metric": "val_loss"}  # torch's defaults


def shape_factor(schedule: Mapping, position: int, length: int) -> float:
    """The schedule's multiplier after ``position`` completed units (epochs or steps) of a run of ``length``:
    step decay applies once a milestone unit has completed, as torch's MultiStepLR stepped once per unit."""
    name = schedule.get("name") or "constant"
    decay = float(schedule.get("lr_decay") if schedule.get("lr_decay") is not None else 0.1)
    if name in ("constant", "plateau"):  # plateau's reductions are run state (Plateau), not a shape
        return 1.0
    if name == "step":
        return decay ** sum(1 for m in (schedule.get("milestones") or []) if m <= position)
    if name == "exponential":
        return decay ** position
    if name == "cosine":
        floor = float(schedule.get("min_factor") or 0.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * position / max(length, 1)))
    raise ValueError(f"lr_schedule.name={name!r} is not known; valid: {', '.join(SCHEDULES)}")


def lr_factor(schedule: Mapping, epoch: int, total_epochs: int) -> float:
    """Multiplier for training epoch ``epoch`` (1-based) of an epoch-unit schedule."""
    return shape_factor(schedule, epoch - 1, total_epochs)


def warmup_factor(warmup_steps: int, step: int) -> float:
    """Linear warmup: (step + 1) / warmup_steps for the first warmup_steps steps (``step`` = steps taken)."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


class Plateau:
    """torch.optim.lr_scheduler.ReduceLROnPlateau's rule (relative threshold; no cooldown or floor) as a factor:
    after more than ``patience`` epochs whose metric did not beat the best by the relative ``threshold``, the
    factor is multiplied by ``factor``. YellowFin's PyTorch LM divides its lr_factor by 4 whenever validation
    does not improve: factor 0.25, patience 0, threshold 0."""

    def __init__(self, schedule: Mapping) -> None:
        get = {k: schedule.get(k) if schedule.get(k) is not None else d for k, d in PLATEAU_DEFAULTS.items()}
        self.decay, self.patience = float(get["factor"]), int(get["patience"])
        self.threshold, self.metric = float(get["threshold"]), str(get["metric"])
        self.higher = higher_is_better(self.metric)
        self.best, self.bad_epochs, self.factor = (-math.inf if self.higher else math.inf), 0, 1.0

    def observe(self, value: float) -> None:
        """One epoch's metric (NaN never counts as better, as in torch)."""
        if self.higher:
            better = value > self.best * (1.0 + self.threshold)
        else:
            better = value < self.best * (1.0 - self.threshold)
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.factor, self.bad_epochs = self.factor * self.decay, 0

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "factor": self.factor}

    def load_state_dict(self, state: Mapping) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])
        self.factor = float(state["factor"])


class Schedule:
    """The run's lr factor: the shape (by epoch or by step) x warmup x plateau reductions. ``epochs`` and
    ``steps`` are the run's length in each unit (the cosine period)."""

    def __init__(self, schedule: Mapping, epochs: int, steps: int) -> None:
        self.config, self.epochs, self.steps = dict(schedule), epochs, steps
        self.unit = schedule.get("unit") or "epoch"
        self.warmup = int(schedule.get("warmup_steps") or 0)
        self.plateau = Plateau(schedule) if schedule.get("name") == "plateau" else None
        self.per_step = self.unit == "step" or self.warmup > 0  # else set once per epoch, as always

    def factor(self, epoch: int, step: int) -> float:
        """For the coming update: training epoch ``epoch`` (1-based), ``step`` steps taken so far."""
        if self.unit == "step":
            shape = shape_factor(self.config, step, self.steps)
        else:
            shape = shape_factor(self.config, epoch - 1, self.epochs)
        return shape * warmup_factor(self.warmup, step) * (self.plateau.factor if self.plateau else 1.0)

    def end_epoch(self, row: Mapping) -> None:
        """A training epoch's metrics.csv row: what reduce-on-plateau watches."""
        if self.plateau is not None:
            self.plateau.observe(float(row.get(self.plateau.metric, math.nan)))

    def state_dict(self) -> dict:
        return {"plateau": self.plateau.state_dict() if self.plateau else None}

    def load_state_dict(self, state: Mapping | None) -> None:
        if self.plateau is not None and state and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
