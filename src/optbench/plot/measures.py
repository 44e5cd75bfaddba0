"""The numbers the tables report, as pure functions of run directories (so tests can recompute them from the
CSVs): final and best metric, the epoch of the best validation, time to a target, YellowFin's speedup, and
AlgoPerf's performance profile.

Conventions: a metric whose name ends in 'acc' is better when higher, everything else (loss, sse, ppl) when
lower. Final and best values come from finished runs only; a diverged run never reaches a target after it
diverged, and a run still going is left out of every aggregate (the tables count it instead).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from optbench.plot.runs import Run, RunGroup

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over the seeds that have a value; n of total seeds counted."""

    mean: float
    std: float
    n: int
    total: int

    @classmethod
    def of(cls, values: Iterable[float], total: int | None = None) -> "Stat":
        values = [float(v) for v in values]
        finite = np.array([v for v in values if math.isfinite(v)])
        total = len(values) if total is None else total
        if not len(finite):
            return cls(math.nan, math.nan, 0, total)
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
        return cls(float(np.mean(finite)), std, len(finite), total)


def reached(values: np.ndarray, target: float, higher: bool) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return values >= target if higher else values <= target


def first_reach(x: np.ndarray, y: np.ndarray, target: float, higher: bool) -> float:
    """The first x at which y reaches the target (NaN if it never does)."""
    hits = np.flatnonzero(reached(np.asarray(y, dtype=float), target, higher))
    return float(x[hits[0]]) if len(hits) else math.nan


def _column(run: Run, column: str) -> np.ndarray:
    values = run.metrics.get(column)
    return np.array([]) if values is None else np.where(np.isfinite(values), values, np.nan)


def final_value(run: Run, column: str) -> float:
    """The column in the last row of a finished run (NaN for other runs)."""
    values = _column(run, column)
    if run.status != "finished" or not len(values):
        return math.nan
    return float(values[-1])


def best_index(run: Run, column: str, higher: bool) -> int | None:
    values = _column(run, column)
    if not len(values) or np.all(np.isnan(values)):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return int(np.nanargmax(values) if higher else np.nanargmin(values))  # ties: the first


def best_value(run: Run, column: str, higher: bool) -> float:
    """The best value of the column over the epochs of a finished run."""
    i = best_index(run, column, higher)
    return math.nan if run.status != "finished" or i is None else float(_column(run, column)[i])


def best_epoch(run: Run, column: str, higher: bool) -> float:
    """The epoch whose row has the best value of the column (the epoch best.pth keeps, for val_*)."""
    i = best_index(run, column, higher)
    return math.nan if run.status != "finished" or i is None else float(run.metrics["epoch"][i])


def value_at_best(run: Run, column: str, by: str, higher: bool) -> float:
    """The column at the epoch where ``by`` is best (e.g. test accuracy of the best-validation model)."""
    i = best_index(run, by, higher)
    values = _column(run, column)
    return math.nan if run.status != "finished" or i is None or i >= len(values) else float(values[i])


def time_to_target(run: Run, column: str, target: float, higher: bool, source: str = "metrics",
                   transform: Transform | None = None) -> tuple[float, float]:
    """(iterations, seconds of training time) when the column first reaches the target, (NaN, NaN) if never.

    From metrics.csv the answer is an epoch end (its step and time_s). From steps.csv (per-iteration, optionally
    smoothed) the seconds are interpolated linearly in the step between the epoch ends' time_s."""
    if source == "metrics":
        y = _column(run, column)
        if not len(y):
            return math.nan, math.nan
        hits = np.flatnonzero(reached(y if transform is None else transform(y), target, higher))
        if not len(hits):
            return math.nan, math.nan
        return float(run.metrics["step"][hits[0]]), float(run.metrics["time_s"][hits[0]])
    table = run.steps
    if column not in table:
        return math.nan, math.nan
    y = np.where(np.isfinite(table[column]), table[column], np.nan)
    step = first_reach(table["step"], y if transform is None else transform(y), target, higher)
    if math.isnan(step):
        return math.nan, math.nan
    epochs = run.metrics
    seconds = float(np.interp(step, epochs["step"], epochs["time_s"])) if "time_s" in epochs else math.nan
    return step, seconds


def counted(group: RunGroup) -> list[Run]:
    """The runs whose numbers are settled: finished or diverged."""
    return [r for r in group.runs if r.status in ("finished", "diverged")]


def group_time_to_target(group: RunGroup, column: str, target: float, higher: bool, source: str = "metrics",
                         transform: Transform | None = None) -> tuple[Stat, Stat]:
    """Iterations and seconds to the target over the settled seeds (n = how many reached it)."""
    runs = counted(group)
    times = [time_to_target(r, column, target, higher, source, transform) for r in runs]
    return Stat.of([t[0] for t in times], len(runs)), Stat.of([t[1] for t in times], len(runs))


def profile_time(stat: Stat) -> float:
    """A group's time for the performance profile: the mean over seeds if every settled seed reached the
    target, else infinity (the task counts as not solved)."""
    return stat.mean if stat.total and stat.n == stat.total else math.inf


def performance_profile(times: Mapping[str, Mapping[str, float]], optims: Sequence[str], taus: Sequence[float]
                        ) -> dict[str, list[float]]:
    """AlgoPerf's performance profile: for each optimizer, the fraction of tasks whose time to target is within
    tau times the fastest optimizer's on that task. ``times[task][optim]``; missing or inf = not solved."""
    tasks = list(times)
    profile = {o: [0.0] * len(taus) for o in optims}
    if not tasks:
        return profile
    for task in tasks:
        finite = [t for t in (times[task].get(o, math.inf) for o in optims) if math.isfinite(t)]
        if not finite:
            continue
        best = min(finite)
        for o in optims:
            t = times[task].get(o, math.inf)
            if not math.isfinite(t):
                continue
            ratio = t / best if best > 0 else (1.0 if t == best else math.inf)
            for i, tau in enumerate(taus):
                if ratio <= tau:
                    profile[o][i] += 1.0 / len(tasks)
    return profile


@dataclass(frozen=True)
class Speedup:
    """YellowFin's speedup: the lowest smoothed training loss the baseline reaches, the iterations it needs,
    the iterations the other optimizer needs to reach that loss, and their ratio (NaN if it never does)."""

    loss: float
    baseline_steps: float
    steps: float

    @property
    def ratio(self) -> float:
        return self.baseline_steps / self.steps if self.steps and math.isfinite(self.steps) else math.nan


def mean_curve(group: RunGroup, column: str, transform: Transform | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-iteration curve (steps.csv) smoothed per seed, then averaged over the settled seeds."""
    settled = RunGroup(group.task, group.optim, group.variant, counted(group))
    xs, grid = settled.aligned(column, "steps", transform=transform)
    if not len(xs):
        return xs, np.array([])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xs, np.nanmean(grid, 0)


def speedup(baseline: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> Speedup:
    bx, by = baseline
    if not len(by) or np.all(np.isnan(by)):
        return Speedup(math.nan, math.nan, math.nan)
    loss = float(np.nanmin(by))
    return Speedup(loss, first_reach(bx, by, loss, higher=False), first_reach(other[0], other[1], loss, False))
