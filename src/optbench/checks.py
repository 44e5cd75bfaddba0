"""Reject bad configurations before any data is loaded or any step is taken, naming the key and the allowed
range. The optimizer's ranges are its constructor's: ``check_optim`` builds it on a placeholder parameter, so
a value the constructor accepts is never rejected here, nor the reverse."""

from __future__ import annotations

import math
from numbers import Number
from typing import Any, Mapping

from optbench.controls import EPOCH_PREFIXES, parse_target
from optbench.data.batches import check_val_fraction, check_val_split
from optbench.errors import ConfigError
from optbench.schedules import SCHEDULES, UNITS

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("none", "bf16", "fp16")
KEEP = ("last", "best", "all")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Number) or not math.isfinite(float(value)):
        raise ConfigError(f"{key}={value!r} must be a finite number")
    return float(value)


def _in_range(key: str, value: Any, low: float, high: float, high_open: bool = True, low_open: bool = False):
    v = _number(key, value)
    ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{key}={value!r} is out of range: must be in {lo}{low}, {high}{hi}")


def _int_at_least(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key}={value!r} must be an integer >= {low}")


def check_optim(cfg: Mapping) -> None:
    """The run's optimizer settings (with the task's weight decay filled in), by building the optimizer."""
    import torch

    from optbench.optim import build_optimizer
    from optbench.run_config import optimizer_config

    optim = optimizer_config(cfg)
    try:
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], optim)
    except ValueError as err:
        raise ConfigError(f"optim.{err}") from None
    check_schedule("optim.lr_schedule", optim.get("lr_schedule") or {})
    check_schedule_has_effect(cfg)


# schedule settings, and the schedules that read them (warmup_steps: every schedule)
_SCHEDULE_KEYS = {"milestones": ("step",), "lr_decay": ("step", "exponential"), "min_factor": ("cosine",),
                  "unit": ("step", "exponential", "cosine"), "factor": ("plateau",), "patience": ("plateau",),
                  "threshold": ("plateau",), "metric": ("plateau",)}


def check_schedule_has_effect(cfg: Mapping) -> None:
    """An lr_schedule override that the run's schedule never reads is a mistake, not a new run directory
    (``optim.lr_schedule.lr_decay=0.5`` under a constant schedule)."""
    from optbench.run_config import schedule_config

    schedule, task = schedule_config(cfg), cfg["task"].get("lr_schedule") or {}
    name = schedule.get("name") or "constant"
    for key, readers in _SCHEDULE_KEYS.items():
        value = (cfg["optim"].get("lr_schedule") or {}).get(key)
        if value is not None and value != task.get(key) and name not in readers:
            raise ConfigError(f"optim.lr_schedule.{key}={value!r} has no effect: the schedule is {name!r}, and "
                              f"only {' or '.join(readers)} reads {key}; set optim.lr_schedule.name too")


def check_schedule(prefix: str, schedule: Mapping) -> None:
    name = schedule.get("name")
    if name is not None and name not in SCHEDULES:
        raise ConfigError(f"{prefix}.name={name!r} is not known; valid: {', '.join(SCHEDULES)}")
    if schedule.get("lr_decay") is not None:
        _in_range(f"{prefix}.lr_decay", schedule["lr_decay"], 0.0, 1.0, high_open=False, low_open=True)
    milestones = schedule.get("milestones")
    if milestones:
        for m in milestones:
            _int_at_least(f"{prefix}.milestones", m, 1)
        if list(milestones) != sorted(set(milestones)):
            raise ConfigError(f"{prefix}.milestones={list(milestones)} must be strictly increasing epochs (steps "
                              "with unit=step)")
    if schedule.get("unit") is not None and schedule["unit"] not in UNITS:
        raise ConfigError(f"{prefix}.unit={schedule['unit']!r} is not known; valid: {', '.join(UNITS)}")
    if schedule.get("warmup_steps") is not None:
        _int_at_least(f"{prefix}.warmup_steps", schedule["warmup_steps"], 0)
    check_plateau(prefix, schedule)


def check_plateau(prefix: str, schedule: Mapping) -> None:
    """Reduce-on-plateau's settings (torch's ReduceLROnPlateau ranges); metric must be a metrics.csv column."""
    if schedule.get("factor") is not None:
        _in_range(f"{prefix}.factor", schedule["factor"], 0.0, 1.0, low_open=True)
    if schedule.get("patience") is not None:
        _int_at_least(f"{prefix}.patience", schedule["patience"], 0)
    if schedule.get("threshold") is not None:
        _in_range(f"{prefix}.threshold", schedule["threshold"], 0.0, math.inf)
    metric = schedule.get("metric")
    if metric is not None and not (isinstance(metric, str) and metric.startswith(EPOCH_PREFIXES)):
        raise ConfigError(f"{prefix}.metric={metric!r} must be a metrics.csv column checked at epoch ends: "
                          "val_loss (the default), val_acc, train_loss ...")


def check_controls(cfg: Mapping) -> None:
    """task.max_steps and the trainer's run controls (optbench.controls)."""
    task, trainer = cfg["task"], cfg["trainer"]
    if task.get("max_steps") is not None:
        _int_at_least("task.max_steps", task["max_steps"], 1)
    if trainer.get("stop_at") is not None:
        parse_target(trainer["stop_at"])
    if trainer.get("patience") is not None:
        _int_at_least("trainer.patience", trainer["patience"], 0)
    if trainer.get("nt_asgd") is not None:
        _int_at_least("trainer.nt_asgd", trainer["nt_asgd"], 1)


def check_run(cfg: Mapping) -> None:
    """All checks that need no data: run settings, task sizes, trainer options, optimizer ranges."""
    task, trainer = cfg["task"], cfg["trainer"]
    _int_at_least("task.epochs", task.get("epochs"), 1)
    _int_at_least("task.batch_size", task.get("batch_size"), 1)
    if task.get("val_fraction") is not None:
        try:
            check_val_fraction(task["val_fraction"])
            check_val_split(task)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if task.get("weight_decay") is not None:
        _in_range("task.weight_decay", task["weight_decay"], 0.0, math.inf)
    check_schedule("task.lr_schedule", task.get("lr_schedule") or {})
    _int_at_least("seed", cfg.get("seed"), 0)
    device = str(cfg.get("device"))
    if device.split(":")[0] not in DEVICES:
        raise ConfigError(f"device={device!r} is not known; valid: {', '.join(DEVICES)} (or cuda:N)")
    _int_at_least("trainer.log_every", trainer.get("log_every"), 1)
    if trainer.get("keep", "last") not in KEEP:
        raise ConfigError(f"trainer.keep={trainer.get('keep')!r} is not known; valid: {', '.join(KEEP)}")
    if trainer.get("threads", "auto") != "auto":
        _int_at_least("trainer.threads", trainer.get("threads"), 1)
    if trainer.get("progress", "auto") not in ("auto", True, False, "none"):
        raise ConfigError(f"trainer.progress={trainer.get('progress')!r} is not known; valid: auto, true, false, none")
    _int_at_least("trainer.staleness", trainer.get("staleness", 0), 0)
    if trainer.get("amp", "none") not in AMP_MODES:
        raise ConfigError(f"trainer.amp={trainer.get('amp')!r} is not known; valid: {', '.join(AMP_MODES)}")
    if trainer.get("staleness", 0) and trainer.get("amp") == "fp16":
        raise ConfigError("trainer.staleness > 0 with trainer.amp=fp16 is not supported (the grad scaler would "
                          "check the fresh gradients but apply stale ones); use trainer.amp=bf16 or none")
    if trainer.get("grad_clip") is not None:
        _in_range("trainer.grad_clip", trainer["grad_clip"], 0.0, math.inf, low_open=True)
    check_controls(cfg)
    check_optim(cfg)
