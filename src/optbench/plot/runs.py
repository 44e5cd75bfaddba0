"""Run directories as the figures and tables see them, and the aggregation over seeds, in pandas.

A run directory is ``<results_dir>/<task>/<optim>/<variant>/seed<N>/``; a group is the runs that differ only in
seed. Runs of a group may have different lengths (one diverged, one still running): the aggregate at an x uses
the seeds that reached it (a pivot of the seeds' long frame, then NaN-skipping reductions across seeds).
Everything here tolerates files a live trainer is still writing: a missing or half-written summary.json reads
as status 'unknown', a cell that is not a number reads as NaN (optbench.results reads the files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from optbench import rundir, runlock
from optbench.rundir import lookup
from optbench.results import hashable, read_config, read_log, run_dirs, same_value

BANDS = ("minmax", "std", "none")


@dataclass
class Run:
    path: Path
    task: str
    optim: str
    variant: str
    seed: int
    summary: dict = field(default_factory=dict)
    _metrics: pd.DataFrame | None = None
    _steps: pd.DataFrame | None = None
    _config: dict | None = None

    @property
    def status(self) -> str:
        """The summary's status; 'interrupted' for a 'running' run whose process is gone (nobody holds its lock)."""
        return runlock.effective_status(self.path, self.summary)

    @property
    def metrics(self) -> pd.DataFrame:
        """metrics.csv (one row per epoch, epoch 0 first); an empty frame if there is none yet."""
        if self._metrics is None:
            self._metrics = read_log(self.path / rundir.METRICS)
        return self._metrics

    @property
    def steps(self) -> pd.DataFrame:
        """steps.csv (one row per logged iteration)."""
        if self._steps is None:
            self._steps = read_log(self.path / rundir.STEPS)
        return self._steps

    @property
    def config(self) -> dict:
        """The resolved config.yaml the trainer saved ({} if absent or unreadable)."""
        if self._config is None:
            self._config = read_config(self.path)
        return self._config

    def matches(self, where: Mapping[str, Any] | None) -> bool:
        """Whether every dotted config key in ``where`` has the given value in this run's config."""
        return all(same_value(lookup(self.config, key), value) for key, value in (where or {}).items())

    @property
    def label(self) -> str:
        return self.optim if self.variant == "default" else f"{self.optim} ({self.variant})"


def load_runs(results_dir: str | Path, task: str | None = None, optims: Iterable[str] | None = None) -> list[Run]:
    """Every run directory under results_dir (those with a metrics.csv), optionally filtered."""
    return [Run(path, task_name, optim, variant, seed, rundir.read_summary(path) or {})
            for path, task_name, optim, variant, seed in run_dirs(results_dir, task, list(optims or []) or None)]


Transform = Callable[[pd.Series], pd.Series]


def finite(values: pd.Series) -> pd.Series:
    """inf (a diverged step) as NaN, so every reduction skips it."""
    return values.where(np.isfinite(values))


@dataclass
class RunGroup:
    """Runs of one (task, optim, variant) over seeds."""

    task: str
    optim: str
    variant: str
    runs: list[Run]

    @property
    def label(self) -> str:
        return self.runs[0].label

    @property
    def config(self) -> dict:
        return self.runs[0].config

    def statuses(self) -> dict[str, int]:
        return pd.Series([run.status for run in self.runs]).value_counts(sort=False).to_dict()

    def series(self, column: str, source: str = "metrics", x: str | None = None,
               transform: Transform | None = None) -> list[tuple[Run, pd.Series]]:
        """(run, y indexed by x) of every run that logged the column; non-finite y (a diverged step) is NaN and
        ``transform`` (e.g. smoothing) applies to each run's own curve."""
        x = x or ("epoch" if source == "metrics" else "step")
        out = []
        for run in self.runs:
            table = getattr(run, source)
            if column not in table or x not in table:
                continue
            y = finite(table[column])[np.isfinite(table[x])]
            y.index = pd.Index(table[x][y.index], name=x)
            out.append((run, transform(y) if transform is not None and len(y) else y))
        return out

    def seeds(self, column: str, source: str = "metrics", x: str | None = None,
              transform: Transform | None = None) -> pd.DataFrame:
        """One column per seed, indexed by x (the union of the seeds' x); NaN where a seed has no value, and x
        points no seed has are dropped."""
        series = self.series(column, source, x, transform)
        if not series:
            return pd.DataFrame()
        frame = pd.concat({run.seed: y.groupby(level=0).last() for run, y in series}, axis=1).sort_index()
        return frame.dropna(how="all")

    def aligned(self, column: str, source: str = "metrics", x: str | None = None,
                transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(xs, grid[seed, xs]) of ``seeds``, as arrays."""
        frame = self.seeds(column, source, x, transform)
        if frame.empty:
            return np.array([]), np.empty((0, 0))
        return frame.index.to_numpy(dtype=float), frame.to_numpy(dtype=float).T

    def curve(self, column: str, source: str = "metrics", x: str | None = None, band: str = "minmax",
              transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, mean, low, high) over seeds of one column; x is epoch (metrics) or step (steps) by default.
        The band is min-max, mean +- std (population std, as the band of the seeds drawn), or none."""
        if band not in BANDS:
            raise ValueError(f"band={band!r} is not known; valid: {', '.join(BANDS)}")
        frame = self.seeds(column, source, x, transform)
        if frame.empty:
            return (np.array([]),) * 4
        mean = frame.mean(axis=1)
        if band == "minmax":
            low, high = frame.min(axis=1), frame.max(axis=1)
        elif band == "std":
            std = frame.std(axis=1, ddof=0)
            low, high = mean - std, mean + std
        else:
            low = high = mean
        return tuple(np.asarray(v, dtype=float) for v in (frame.index, mean, low, high))


def group_runs(runs: Iterable[Run]) -> list[RunGroup]:
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.optim, run.variant), []).append(run)
    return [RunGroup(*key, sorted(members, key=lambda r: r.seed)) for key, members in sorted(groups.items())]


def tuned_only(groups: Sequence[RunGroup], metric: str = "loss", by: str = "best",
               over: Sequence[str] | None = None) -> list[RunGroup]:
    """The groups tuning selects (optbench.selection): per (task, optim), the variant whose validation score,
    averaged over seeds, is best; a spec's ``select: tuned``."""
    from optbench.selection import select_tuned

    frames = []
    for group in groups:
        for run in group.runs:
            if run.metrics.empty:
                continue
            identity = {"task": run.task, "optim": run.optim, "variant": run.variant, "seed": run.seed,
                        "status": run.status, "path": str(run.path)}
            config = {k: hashable(v) for k, v in rundir.flatten(run.config).items()}
            frames.append(pd.concat([pd.DataFrame([{**config, **identity}] * len(run.metrics)),
                                     run.metrics.reset_index(drop=True)], axis=1))
    if not frames:
        return []
    chosen = select_tuned(pd.concat(frames, ignore_index=True), metric, by, over)
    keep = set(zip(chosen["task"], chosen["optim"], chosen["variant"]))
    return [g for g in groups if (g.task, g.optim, g.variant) in keep]
