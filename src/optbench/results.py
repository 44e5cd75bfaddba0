"""Runs as pandas DataFrames: where every reader of results starts (the summary, a notebook, the plotter).

    import optbench.results as r
    df = r.load("results", task="digits_mlp")               # one row per (run, epoch)
    df[df["optim.lr"] == 0.01].groupby(["optim", "epoch"])["val_loss"].agg(["mean", "std"])
    steps = r.load_steps("results", optim=["adam", "sgd"])  # one row per logged step

Every row carries the run's identity (task, optim, variant, seed, status, path) and its config flattened into
dotted columns (``optim.lr``, ``task.batch_size``, ``trainer.log_every`` ...), so a filter on any setting is a
plain DataFrame selection; ``where={"optim.lr": 1e-3}`` does it while loading. Runs still being written are read
as far as they go (a half-written last line is dropped); a run whose writer died reads as ``interrupted``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pandas as pd
import yaml

from optbench import rundir, runlock
from optbench.rundir import flatten

IDENTITY = ["task", "optim", "variant", "seed", "status", "results_dir", "path"]
higher_is_better = rundir.higher_is_better  # a metric whose name ends in 'acc' is better when higher


def read_log(path: Path) -> pd.DataFrame:
    """A CSV log of a run (metrics.csv, steps.csv) as numbers; a last line without its newline (the writer was
    cut off) is dropped, as are rows whose cells are not numbers."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return pd.DataFrame()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if not text.strip() or text.count("\n") < 2:
        return pd.DataFrame()
    frame = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
    numbers = frame.apply(pd.to_numeric, errors="coerce")
    broken = numbers.isna() & frame.notna()  # a cell that is there but is not a number
    return numbers[~broken.any(axis=1)].reset_index(drop=True)


def _selected(value: Any, wanted: str | Iterable[str] | None) -> bool:
    if wanted is None:
        return True
    return value == wanted if isinstance(wanted, str) else value in set(wanted)


def same_value(a: Any, b: Any) -> bool:
    """Config equality that forgives float formatting (1e-3 written as 0.001) and tuples vs lists."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def runs(results_dir: str | Path, task: str | Iterable[str] | None = None, optim: str | Iterable[str] | None = None,
         status: str | Iterable[str] | None = None, where: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per run directory under ``results_dir`` or a results directory inside it (``results_dir`` names
    the one holding the run): identity and flattened config."""
    rows = []
    for path, task_name, optim_name, variant, seed in run_dirs(results_dir, task, optim, nested=True):
        summary = rundir.read_summary(path)
        state = runlock.effective_status(path, summary)
        if not _selected(state, status):
            continue
        config = flatten(read_config(path))
        if not all(same_value(config.get(k), v) for k, v in (where or {}).items()):
            continue
        rows.append({"task": task_name, "optim": optim_name, "variant": variant, "seed": seed, "status": state,
                     "results_dir": str(path.parents[3]), "path": str(path),
                     **{k: hashable(v) for k, v in config.items() if k != "results_dir"}})
    return pd.DataFrame(rows, columns=None if rows else IDENTITY)


def run_dirs(results_dir: str | Path, task: str | Iterable[str] | None = None,
             optim: str | Iterable[str] | None = None, nested: bool = False
             ) -> Iterator[tuple[Path, str, str, str, int]]:
    """(path, task, optim, variant, seed) of every run directory (one with a metrics.csv), in path order;
    ``nested``: also those of results directories inside this one (results/quickstart, results/aggmo ...)."""
    pattern = f"**/{rundir.RUN_GLOB}/{rundir.METRICS}" if nested else f"{rundir.RUN_GLOB}/{rundir.METRICS}"
    for metrics in sorted(set(Path(results_dir).glob(pattern))):
        path = metrics.parent
        task_name, optim_name, variant = path.parts[-4:-1]
        if path.name[4:].isdigit() and _selected(task_name, task) and _selected(optim_name, optim):
            yield path, task_name, optim_name, variant, int(path.name[4:])


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster on a sweep's configs


def read_config(path: Path) -> dict:
    """A run directory's config.yaml ({} if absent or unreadable)."""
    try:
        return yaml.load((path / rundir.CONFIG).read_text(), Loader=_YAML_LOADER) or {}
    except (OSError, yaml.YAMLError):
        return {}


def hashable(value: Any) -> Any:
    """Lists (betas, milestones) as tuples, so config columns stay hashable for groupby."""
    return tuple(value) if isinstance(value, list) else value


def _logs(name: str, results_dir, **filters) -> pd.DataFrame:
    index = runs(results_dir, **filters)
    logs = {i: read_log(Path(path) / name) for i, path in enumerate(index["path"])}
    logs = {i: log for i, log in logs.items() if len(log)}
    if not logs:
        return pd.DataFrame(columns=list(index.columns))
    rows = pd.concat(logs.values(), keys=logs.keys(), names=["run", None]).reset_index(level=0)
    identity = index.iloc[rows.pop("run").to_numpy()].reset_index(drop=True)
    return pd.concat([identity, rows.reset_index(drop=True)], axis=1)


def load(results_dir: str | Path, task=None, optim=None, status=None, where=None) -> pd.DataFrame:
    """metrics.csv of every matching run: one row per (run, epoch), epoch 0 = before training."""
    return _logs(rundir.METRICS, results_dir, task=task, optim=optim, status=status, where=where)


def load_steps(results_dir: str | Path, task=None, optim=None, status=None, where=None) -> pd.DataFrame:
    """steps.csv of every matching run: one row per logged step."""
    return _logs(rundir.STEPS, results_dir, task=task, optim=optim, status=status, where=where)
