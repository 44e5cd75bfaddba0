"""Argument checks with uniform messages: '<name> must be ..., got <value>'. The optimizers' constructors are
the one place ranges are defined; the config check (optbench.checks) builds the optimizer to apply them."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Sequence


def check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    bound = ">= 0" if allow_zero else "> 0"
    if not (_is_number(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_unit_interval(name: str, value: Any, closed: bool = False) -> None:
    """Momentum-like coefficients: in [0, 1) (``closed``: [0, 1])."""
    ok = _is_number(value) and math.isfinite(value)
    if not (ok and 0.0 <= value and (value <= 1.0 if closed else value < 1.0)):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value!r}")


def check_betas(name: str, betas: Any, length: int | None = None, distinct: bool = False) -> None:
    if not isinstance(betas, Sequence) or isinstance(betas, str):
        raise ValueError(f"{name} must be a list of numbers in [0, 1), got {betas!r}")
    betas = tuple(betas)
    if length is not None and len(betas) != length:
        raise ValueError(f"{name} must have {length} entries, got {betas!r}")
    if not betas:
        raise ValueError(f"{name} must not be empty")
    for i, beta in enumerate(betas):
        check_unit_interval(f"{name}[{i}]", beta)
    if distinct and len(set(betas)) != len(betas):
        raise ValueError(f"{name} must not repeat a value (each beta is one velocity buffer), got {betas!r}")


def check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
