"""Smoothing of noisy per-iteration curves before they are averaged over seeds or compared to a threshold.

Both smoothers are causal (a point depends only on the past), so "the first iteration at which the smoothed loss
reaches L" never looks ahead, and both keep the curve's length (the start uses the points available so far).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` points (fewer at the start); NaN points are skipped."""
    if window < 1:
        raise ValueError(f"smoothing window={window} must be >= 1")
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(y)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    hi = np.arange(1, len(y) + 1)
    lo = np.maximum(hi - window, 0)
    n = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sums[hi] - sums[lo]) / n
    out[~finite] = np.nan  # a diverged point stays visible as a gap, not averaged away
    return out


def ema(y: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with weight on the past in [0, 1), debiased as TensorBoard does, so the
    first point equals the first value instead of being pulled to zero."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"ema weight={weight} must be in [0, 1)")
    y = np.asarray(y, dtype=float)
    out = np.full(len(y), np.nan)
    acc, norm = 0.0, 0.0
    for i, value in enumerate(y):
        if not np.isfinite(value):
            continue
        acc = weight * acc + (1.0 - weight) * value
        norm = weight * norm + (1.0 - weight)
        out[i] = acc / norm
    return out


def smoother(spec: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """A spec's ``smooth`` value as a function: null/0/1 = none, an int = moving-average window (in logged
    points), {ema: w} = exponential moving average with weight w."""
    if isinstance(spec, bool):
        raise ValueError("smooth must be null, a window (int >= 1) or {ema: weight}")
    if spec is None or spec in (0, 1):
        return None
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"smooth={spec} must be a window >= 1")
        return lambda y: moving_average(y, spec)
    if isinstance(spec, dict) and set(spec) == {"ema"}:
        weight = float(spec["ema"])
        ema(np.zeros(1), weight)  # validates now, at spec load, not at draw time
        return lambda y: ema(y, weight)
    raise ValueError(f"smooth={spec!r} must be null, a window (int >= 1) or {{ema: weight}}")
