"""Smoothing of noisy per-iteration curves before they are averaged over seeds or compared to a threshold.

Both smoothers are causal (a point depends only on the past), so "the first iteration at which the smoothed loss
reaches L" never looks ahead, and both keep the curve's length (the start uses the points available so far).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import numpy as np
import pandas as pd

Curve = TypeVar("Curve", np.ndarray, pd.Series)


def _as_series(y: Curve) -> pd.Series:
    series = y.astype(float) if isinstance(y, pd.Series) else pd.Series(np.asarray(y, dtype=float))
    return series.where(np.isfinite(series))  # inf (a diverged step) is skipped like NaN


def _like(y: Curve, out: pd.Series) -> Curve:
    return out if isinstance(y, pd.Series) else out.to_numpy()


def moving_average(y: Curve, window: int) -> Curve:
    """Trailing mean over the last ``window`` points (fewer at the start); NaN points are skipped."""
    if window < 1:
        raise ValueError(f"smoothing window={window} must be >= 1")
    series = _as_series(y)
    out = series.rolling(window, min_periods=1).mean()
    return _like(y, out.where(series.notna()))  # a diverged point stays visible as a gap, not averaged away


def ema(y: Curve, weight: float) -> Curve:
    """Exponential moving average with weight on the past in [0, 1), debiased as TensorBoard does (pandas'
    ``adjust=True``), so the first point equals the first value instead of being pulled to zero; NaN points
    are skipped without decaying the average."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"ema weight={weight} must be in [0, 1)")
    series = _as_series(y)
    out = series.ewm(alpha=1.0 - weight, adjust=True, ignore_na=True).mean()
    return _like(y, out.where(series.notna()))


def smoother(spec: Any) -> Callable[[Curve], Curve] | None:
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
