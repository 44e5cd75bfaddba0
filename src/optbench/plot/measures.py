"""The numbers the tables report, as pure functions of run directories (so tests can recompute them from the
CSVs): final and best metric, the epoch of the best validation, time to a target, YellowFin's speedup, and
AlgoPerf's performance profile.

Conventions: a metric whose name ends in 'acc' is better when higher, everything else (loss, sse, ppl) when
lower. Final and best values come from finished runs only (and reached ones: stopped at a trainer.stop_at
target); a diverged run never reaches a target after it diverged, and a run still going is left out of every
aggregate (the tables count it instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from optbench.plot.runs import Run, RunGroup, finite
from optbench.rundir import FINAL, SETTLED

Transform = Callable[[pd.Series], pd.Series]


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over the seeds that have a value; n of total seeds counted."""

    mean: float
    std: float
    n: int
    total: int

    @classmethod
    def of(cls, values: Iterable[float], total: int | None = None) -> "Stat":
        values = pd.Series(list(values), dtype=float)
        total = len(values) if total is None else total
        kept = finite(values).dropna()
        if kept.empty:
            return cls(math.nan, math.nan, 0, total)
        return cls(float(kept.mean()), float(kept.std(ddof=1)) if len(kept) > 1 else 0.0, len(kept), total)


def reached(values: pd.Series, target: float, higher: bool) -> pd.Series:
    """Where the values reach the target (NaN never does)."""
    return values >= target if higher else values <= target


def first_reach(x: pd.Series | np.ndarray, y: pd.Series | np.ndarray, target: float, higher: bool) -> float:
    """The first x at which y reaches the target (NaN if it never does)."""
    hits = np.flatnonzero(reached(pd.Series(np.asarray(y, dtype=float)), target, higher).to_numpy())
    return float(np.asarray(x)[hits[0]]) if len(hits) else math.nan


def _column(run: Run, column: str) -> pd.Series:
    """A metrics.csv column, inf as NaN; empty if the run never logged it."""
    table = run.metrics
    return finite(table[column]).reset_index(drop=True) if column in table else pd.Series(dtype=float)


def final_value(run: Run, column: str) -> float:
    """The column in the last row of a finished run (NaN for other runs)."""
    values = _column(run, column)
    return float(values.iloc[-1]) if run.status in FINAL and len(values) else math.nan


def best_index(run: Run, column: str, higher: bool) -> int | None:
    """The row of the best value (ties: the first); None if the column has no finite value."""
    values = _column(run, column)
    if values.dropna().empty:
        return None
    return int(values.idxmax() if higher else values.idxmin())


def best_value(run: Run, column: str, higher: bool) -> float:
    """The best value of the column over the epochs of a finished run."""
    i = best_index(run, column, higher)
    return math.nan if run.status not in FINAL or i is None else float(_column(run, column).iloc[i])


def best_epoch(run: Run, column: str, higher: bool) -> float:
    """The epoch whose row has the best value of the column (the epoch best.pth keeps, for val_*)."""
    i = best_index(run, column, higher)
    return math.nan if run.status not in FINAL or i is None else float(run.metrics["epoch"].iloc[i])


def value_at_best(run: Run, column: str, by: str, higher: bool) -> float:
    """The column at the epoch where ``by`` is best (e.g. test accuracy of the best-validation model)."""
    i = best_index(run, by, higher)
    values = _column(run, column)
    return math.nan if run.status not in FINAL or i is None or i >= len(values) else float(values.iloc[i])


def time_to_target(run: Run, column: str, target: float, higher: bool, source: str = "metrics",
                   transform: Transform | None = None) -> tuple[float, float]:
    """(iterations, seconds of training time) when the column first reaches the target, (NaN, NaN) if never.

    From metrics.csv the answer is an epoch end (its step and time_s). From steps.csv (per-iteration, optionally
    smoothed) the seconds are interpolated linearly in the step between the epoch ends' time_s."""
    table = run.metrics if source == "metrics" else run.steps
    if column not in table:
        return math.nan, math.nan
    y = finite(table[column])
    hits = reached(y if transform is None else transform(y), target, higher)
    if not hits.any():
        return math.nan, math.nan
    first = hits.idxmax()  # the label of the first True
    step = float(table["step"][first])
    if source == "metrics":
        return step, float(table["time_s"][first])
    epochs = run.metrics
    seconds = float(np.interp(step, epochs["step"], epochs["time_s"])) if "time_s" in epochs else math.nan
    return step, seconds


def counted(group: RunGroup) -> list[Run]:
    """The runs whose numbers are settled: finished, reached (stopped at its target) or diverged."""
    return [r for r in group.runs if r.status in SETTLED]


def profile_time(stat: Stat) -> float:
    """A group's time for the performance profile: the mean over seeds if every settled seed reached the
    target, else infinity (the task counts as not solved)."""
    return stat.mean if stat.total and stat.n == stat.total else math.inf


def performance_profile(times: Mapping[str, Mapping[str, float]], optims: Sequence[str], taus: Sequence[float]
                        ) -> dict[str, list[float]]:
    """AlgoPerf's performance profile: for each optimizer, the fraction of tasks whose time to target is within
    tau times the fastest optimizer's on that task. ``times[task][optim]``; missing or inf = not solved."""
    frame = pd.DataFrame.from_dict({t: dict(v) for t, v in times.items()}, orient="index", dtype=float)
    frame = frame.reindex(index=list(times), columns=list(optims))
    if frame.empty:
        return {o: [0.0] * len(taus) for o in optims}
    frame = frame.where(np.isfinite(frame))  # not solved: NaN, never within any tau
    fastest = frame.min(axis=1)
    ratios = frame.div(fastest, axis=0).mask(frame.eq(fastest, axis=0), 1.0)  # a time of 0 ties at 1
    return {o: [float((ratios[o] <= tau).sum()) / len(frame) for tau in taus] for o in optims}


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
    seeds = settled.seeds(column, "steps", transform=transform)
    if seeds.empty:
        return np.array([]), np.array([])
    return seeds.index.to_numpy(dtype=float), seeds.mean(axis=1).to_numpy()


def speedup(baseline: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> Speedup:
    bx, by = baseline
    if pd.Series(by, dtype=float).dropna().empty:
        return Speedup(math.nan, math.nan, math.nan)
    loss = float(np.nanmin(by))
    return Speedup(loss, first_reach(bx, by, loss, higher=False), first_reach(other[0], other[1], loss, False))


def times_by_setting(groups: Sequence[RunGroup], params: Sequence[str], column: str, threshold: float,
                     higher: bool, source: str, transform: Transform | None) -> pd.DataFrame:
    """One row per settled run: its values of the config keys ``params``, the iterations until the column first
    reaches the threshold (NaN if never), and whether it diverged without reaching it."""
    from optbench.rundir import lookup

    rows = []
    for group in groups:
        for run in counted(group):
            values = [lookup(run.config, p) for p in params]
            if any(v is None for v in values):
                continue
            steps, _ = time_to_target(run, column, threshold, higher, source, transform)
            rows.append({**{p: float(v) for p, v in zip(params, values)}, "steps": steps,
                         "diverged": run.status == "diverged" and not math.isfinite(steps)})
    return pd.DataFrame(rows, columns=[*params, "steps", "diverged"])
