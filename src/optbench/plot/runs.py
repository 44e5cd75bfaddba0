"""Reading run directories and aggregating seeds.

A run directory is ``<results_dir>/<task>/<optim>/<variant>/seed<N>/``; a group is the runs that differ only in
seed. Runs of a group may have different lengths (one diverged, one still running): the aggregate at an epoch
uses the seeds that reached it.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, np.ndarray] = {}
    for key in (rows[0].keys() if rows else ()):
        columns[key] = np.array([float(r[key]) if r.get(key) not in ("", None) else math.nan for r in rows])
    return columns


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

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """metrics.csv as columns (one value per epoch, epoch 0 first)."""
        if self._metrics is None:
            self._metrics = _read_columns(self.path / "metrics.csv")
        return self._metrics

    @property
    def steps(self) -> dict[str, np.ndarray]:
        """steps.csv as columns (one value per logged iteration)."""
        if self._steps is None:
            self._steps = _read_columns(self.path / "steps.csv")
        return self._steps

    @property
    def label(self) -> str:
        return self.optim if self.variant == "default" else f"{self.optim} ({self.variant})"


def load_runs(results_dir: str | Path, task: str | None = None, optims: Iterable[str] | None = None) -> list[Run]:
    """Every run directory under results_dir (those with a metrics.csv), optionally filtered."""
    runs = []
    wanted = set(optims) if optims else None
    for metrics in sorted(Path(results_dir).glob("*/*/*/seed*/metrics.csv")):
        path = metrics.parent
        variant_dir = path.parent
        optim_dir = variant_dir.parent
        task_dir = optim_dir.parent
        if task and task_dir.name != task or wanted and optim_dir.name not in wanted:
            continue
        try:
            summary = json.loads((path / "summary.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            summary = {}
        runs.append(Run(path, task_dir.name, optim_dir.name, variant_dir.name, int(path.name[4:]), summary))
    return runs


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

    def curve(self, column: str, source: str = "metrics", x: str | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, mean, min, max) over seeds of one column; x is epoch (metrics) or step (steps) by default.
        Points where no seed has a value are dropped."""
        x = x or ("epoch" if source == "metrics" else "step")
        tables = [getattr(r, source) for r in self.runs]
        tables = [t for t in tables if column in t and x in t]
        if not tables:
            return (np.array([]),) * 4
        xs = np.unique(np.concatenate([t[x] for t in tables]))
        grid = np.full((len(tables), len(xs)), np.nan)
        for i, t in enumerate(tables):
            grid[i, np.searchsorted(xs, t[x])] = t[column]
        valid = ~np.all(np.isnan(grid), axis=0)
        grid, xs = grid[:, valid], xs[valid]
        with np.errstate(all="ignore"):
            return xs, np.nanmean(grid, 0), np.nanmin(grid, 0), np.nanmax(grid, 0)


def group_runs(runs: Iterable[Run]) -> list[RunGroup]:
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.optim, run.variant), []).append(run)
    return [RunGroup(*key, sorted(members, key=lambda r: r.seed)) for key, members in sorted(groups.items())]
