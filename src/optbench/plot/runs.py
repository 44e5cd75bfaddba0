"""Run directories as the figures and tables see them, and the aggregation over seeds.

A run directory is ``<results_dir>/<task>/<optim>/<variant>/seed<N>/``; a group is the runs that differ only in
seed. Runs of a group may have different lengths (one diverged, one still running): the aggregate at an x uses
the seeds that reached it. Everything here tolerates files a live trainer is still writing: a missing or
half-written summary.json reads as status 'unknown', a cell that is not a number reads as NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import yaml

from optbench import rundir, runlock
from optbench.results import read_log, same_value

BANDS = ("minmax", "std", "none")


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    """A CSV log as float columns, read by pandas (optbench.results.read_log): blanks of columns that appeared
    later are NaN, a half-written last line is dropped; {} for a missing or empty log."""
    frame = read_log(path)
    return {} if frame.empty else {name: frame[name].to_numpy(dtype=float) for name in frame.columns}


def lookup(config: Mapping, dotted: str, default: Any = None) -> Any:
    """config['a']['b'] for 'a.b'; default where a key is missing."""
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


@dataclass
class Run:
    path: Path
    task: str
    optim: str
    variant: str
    seed: int
    summary: dict = field(default_factory=dict)
    _metrics: dict | None = None
    _steps: dict | None = None
    _config: dict | None = None

    @property
    def status(self) -> str:
        """The summary's status; 'interrupted' for a 'running' run whose process is gone (nobody holds its lock)."""
        return runlock.effective_status(self.path, self.summary)

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """metrics.csv as columns (one value per epoch, epoch 0 first)."""
        if self._metrics is None:
            self._metrics = _read_columns(self.path / rundir.METRICS)
        return self._metrics

    @property
    def steps(self) -> dict[str, np.ndarray]:
        """steps.csv as columns (one value per logged iteration)."""
        if self._steps is None:
            self._steps = _read_columns(self.path / rundir.STEPS)
        return self._steps

    @property
    def config(self) -> dict:
        """The resolved config.yaml the trainer saved ({} if absent or unreadable)."""
        if self._config is None:
            try:
                self._config = yaml.safe_load((self.path / rundir.CONFIG).read_text()) or {}
            except (FileNotFoundError, yaml.YAMLError):
                self._config = {}
        return self._config

    def matches(self, where: Mapping[str, Any] | None) -> bool:
        """Whether every dotted config key in ``where`` has the given value in this run's config."""
        return all(same_value(lookup(self.config, key), value) for key, value in (where or {}).items())

    @property
    def label(self) -> str:
        return self.optim if self.variant == "default" else f"{self.optim} ({self.variant})"


def load_runs(results_dir: str | Path, task: str | None = None, optims: Iterable[str] | None = None) -> list[Run]:
    """Every run directory under results_dir (those with a metrics.csv), optionally filtered."""
    runs = []
    wanted = set(optims) if optims else None
    for metrics in sorted(Path(results_dir).glob(f"{rundir.RUN_GLOB}/{rundir.METRICS}")):
        path = metrics.parent
        variant_dir = path.parent
        optim_dir = variant_dir.parent
        task_dir = optim_dir.parent
        if task and task_dir.name != task or wanted and optim_dir.name not in wanted:
            continue
        if not path.name[4:].isdigit():
            continue
        summary = rundir.read_summary(path) or {}
        runs.append(Run(path, task_dir.name, optim_dir.name, variant_dir.name, int(path.name[4:]), summary))
    return runs


Transform = Callable[[np.ndarray], np.ndarray]


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
        counts: dict[str, int] = {}
        for run in self.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    def series(self, column: str, source: str = "metrics", x: str | None = None,
               transform: Transform | None = None) -> list[tuple[Run, np.ndarray, np.ndarray]]:
        """(run, x, y) of every run that logged the column; non-finite y (a diverged step) becomes NaN and
        ``transform`` (e.g. smoothing) applies to each run's own finite prefix."""
        x = x or ("epoch" if source == "metrics" else "step")
        out = []
        for run in self.runs:
            table = getattr(run, source)
            if column not in table or x not in table:
                continue
            xs, ys = table[x], np.where(np.isfinite(table[column]), table[column], np.nan)
            keep = np.isfinite(xs)
            xs, ys = xs[keep], ys[keep]
            if transform is not None and len(ys):
                ys = transform(ys)
            out.append((run, xs, ys))
        return out

    def aligned(self, column: str, source: str = "metrics", x: str | None = None,
                transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(xs, grid[seed, xs]) with NaN where a seed has no value; x points no seed has are dropped."""
        series = self.series(column, source, x, transform)
        if not series:
            return np.array([]), np.empty((0, 0))
        xs = np.unique(np.concatenate([s[1] for s in series]))
        grid = np.full((len(series), len(xs)), np.nan)
        for i, (_, sx, sy) in enumerate(series):
            grid[i, np.searchsorted(xs, sx)] = sy
        valid = ~np.all(np.isnan(grid), axis=0)
        return xs[valid], grid[:, valid]

    def curve(self, column: str, source: str = "metrics", x: str | None = None, band: str = "minmax",
              transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, mean, low, high) over seeds of one column; x is epoch (metrics) or step (steps) by default.
        The band is min-max, mean +- std, or none (low = high = mean)."""
        if band not in BANDS:
            raise ValueError(f"band={band!r} is not known; valid: {', '.join(BANDS)}")
        xs, grid = self.aligned(column, source, x, transform)
        if not len(xs):
            return (np.array([]),) * 4
        with warnings.catch_warnings():  # all-NaN columns are dropped above; single-seed std is fine
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(grid, 0)
            if band == "minmax":
                return xs, mean, np.nanmin(grid, 0), np.nanmax(grid, 0)
            if band == "std":
                std = np.nanstd(grid, 0)
                return xs, mean, mean - std, mean + std
            return xs, mean, mean, mean


def group_runs(runs: Iterable[Run]) -> list[RunGroup]:
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.optim, run.variant), []).append(run)
    return [RunGroup(*key, sorted(members, key=lambda r: r.seed)) for key, members in sorted(groups.items())]
