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
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml

from optbench import rundir, runlock
from optbench.rundir import flatten

IDENTITY = ["task", "optim", "variant", "seed", "status", "path"]


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


def higher_is_better(metric: str) -> bool:
    """A metric whose name ends in 'acc' is better when higher; loss, sse, ppl when lower."""
    return metric.endswith("acc")


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
    """One row per run directory under ``results_dir``: identity and flattened config."""
    rows = []
    for metrics in sorted(Path(results_dir).glob(f"{rundir.RUN_GLOB}/{rundir.METRICS}")):
        path = metrics.parent
        task_name, optim_name, variant = path.parts[-4:-1]
        if not path.name[4:].isdigit() or not (_selected(task_name, task) and _selected(optim_name, optim)):
            continue
        summary = rundir.read_summary(path)
        state = runlock.effective_status(path, summary)
        if not _selected(state, status):
            continue
        config = flatten(_config(path))
        if not all(same_value(config.get(k), v) for k, v in (where or {}).items()):
            continue
        rows.append({"task": task_name, "optim": optim_name, "variant": variant, "seed": int(path.name[4:]),
                     "status": state, "path": str(path), **{k: _cell(v) for k, v in config.items()}})
    return pd.DataFrame(rows, columns=None if rows else IDENTITY)


def _config(path: Path) -> dict:
    try:
        return yaml.safe_load((path / rundir.CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _cell(value: Any) -> Any:
    """Lists (betas, milestones) as tuples, so config columns stay hashable for groupby."""
    return tuple(value) if isinstance(value, list) else value


def _logs(name: str, results_dir, **filters) -> pd.DataFrame:
    index = runs(results_dir, **filters)
    frames = []
    for run in index.to_dict("records"):
        log = read_log(Path(run["path"]) / name)
        if len(log):
            frames.append(log.assign(**{k: [v] * len(log) for k, v in run.items()}))
    if not frames:
        return pd.DataFrame(columns=list(index.columns))
    frame = pd.concat(frames, ignore_index=True)
    return frame[list(index.columns) + [c for c in frame.columns if c not in index.columns]]


def load(results_dir: str | Path, task=None, optim=None, status=None, where=None) -> pd.DataFrame:
    """metrics.csv of every matching run: one row per (run, epoch), epoch 0 = before training."""
    return _logs(rundir.METRICS, results_dir, task=task, optim=optim, status=status, where=where)


def load_steps(results_dir: str | Path, task=None, optim=None, status=None, where=None) -> pd.DataFrame:
    """steps.csv of every matching run: one row per logged step."""
    return _logs(rundir.STEPS, results_dir, task=task, optim=optim, status=status, where=where)
