"""Run directories written the way the trainer writes them (helpers the other test_plot_* files import), and
the reading side's tolerance of what a live or crashed trainer leaves behind."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pytest
import yaml

from optbench.runlock import RunLock

from optbench.plot.runs import group_runs, load_runs
from optbench.results import read_log
from optbench.plot.smoothing import ema, moving_average, smoother

METRIC_COLUMNS = ["epoch", "step", "time_s", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                  "test_acc"]


def write_csv(path: Path, rows: Sequence[Mapping], fields: Sequence[str] | None = None) -> None:
    fields = list(fields or rows[0].keys())
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields, restval="")
        writer.writeheader()
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows)


LIVE_WRITERS: list = []  # locks of the fake runs that are "still being written", held until the process ends


def write_run(root: Path, task: str, optim: str, seed: int, metrics: Sequence[Mapping], steps: Sequence[Mapping] = (),
              status: str | None = "finished", variant: str = "default", config: Mapping | None = None) -> Path:
    """A run directory in the trainer's format (rundir.py): metrics.csv, steps.csv, summary.json, config.yaml."""
    path = root / task / optim / variant / f"seed{seed}"
    path.mkdir(parents=True, exist_ok=True)
    write_csv(path / "metrics.csv", metrics, [c for c in METRIC_COLUMNS if c in metrics[0]]
              + [c for c in metrics[0] if c not in METRIC_COLUMNS])
    if steps:
        write_csv(path / "steps.csv", steps)
    if status is not None:
        (path / "summary.json").write_text(json.dumps({"status": status, "task": task, "optim": optim,
                                                       "seed": seed}))
    if status == "running":  # a live writer holds the run's lock (without one, readers see "interrupted")
        writer = RunLock(path)
        assert writer.acquire()
        LIVE_WRITERS.append(writer)
    full = {"seed": seed, "task": {"name": task}, "optim": {"name": optim, "lr": 1e-3}, "trainer": {"staleness": 0}}
    for key, value in (config or {}).items():  # dotted keys: {"optim.lr": 0.01}
        node = full
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (path / "config.yaml").write_text(yaml.safe_dump(full))
    return path


def classification_rows(seed: int, epochs: int = 4, steps_per_epoch: int = 10, speed: float = 1.0,
                        lr: float = 1e-3) -> list[dict]:
    """Deterministic, seed-dependent curves: losses fall and accuracies rise with the epoch."""
    rows = []
    for e in range(epochs + 1):
        loss = 2.0 * math.exp(-speed * e / 2) + 0.05 * seed + 0.01
        rows.append({"epoch": e, "step": e * steps_per_epoch, "time_s": 0.5 * e * (1 + 0.1 * seed), "lr": lr * (1 + e),
                     "train_loss": loss, "train_acc": 1 - loss / 2.2, "val_loss": loss * 1.1,
                     "val_acc": 1 - loss * 1.1 / 2.5 - 0.05 * (e == epochs), "test_loss": loss * 1.2,
                     "test_acc": 1 - loss * 1.2 / 2.6})
    return rows


def step_rows(seed: int, total: int = 40, every: int = 2, speed: float = 1.0, lr: float = 1e-3) -> list[dict]:
    return [{"step": s, "epoch": 1 + (s - 1) // 10, "loss": 2.0 * math.exp(-speed * s / 20) + 0.02 * seed,
             "lr": lr * (1 + s / 10)} for s in range(every, total + 1, every)]


# ------------------------------------------------------------------------------------------------ tests
def test_runs_still_being_written_or_without_summary_read_as_far_as_they_go(tmp_path):
    path = write_run(tmp_path, "t", "sgd", 0, classification_rows(0), step_rows(0), status="running")
    with open(path / "steps.csv", "a") as f:
        f.write("42,5,1.2")  # a row cut off mid-write
    (path / "summary.json").write_text('{"status": "runn')  # and a half-written summary
    write_run(tmp_path, "t", "sgd", 1, classification_rows(1)[:2], status=None)  # died before its summary
    (tmp_path / "t" / "sgd" / "default" / "seed_x").mkdir()  # not a run directory
    runs = load_runs(tmp_path)
    assert [(r.seed, r.status) for r in runs] == [(0, "unknown"), (1, "unknown")]
    steps = runs[0].steps
    assert steps["step"].iloc[-1] == 40 and not math.isnan(steps["lr"].iloc[-1])  # the cut-off row is dropped
    xs, grid = group_runs(runs)[0].aligned("val_loss")
    assert list(xs) == [0, 1, 2, 3, 4] and np.isnan(grid[1, 2:]).all() and not np.isnan(grid[0]).any()


def test_config_filters_and_bands(tmp_path):
    for seed in range(3):
        write_run(tmp_path, "t", "sgd", seed, classification_rows(seed), config={"optim.lr": 1e-3})
    write_run(tmp_path, "t", "sgd", 0, classification_rows(0), variant="lr=0.01", config={"optim.lr": 0.01})
    default, other = group_runs(load_runs(tmp_path))
    assert default.runs[0].matches({"optim.lr": 0.001}) and not other.runs[0].matches({"optim.lr": 1e-3})
    assert not default.runs[0].matches({"optim.missing": 1})
    values = np.array([[r["val_loss"] for r in classification_rows(s)] for s in range(3)])
    x, mean, low, high = default.curve("val_loss", band="std")
    np.testing.assert_allclose(mean, values.mean(0))
    np.testing.assert_allclose(high - mean, values.std(0))
    x, mean, low, high = default.curve("val_loss", band="none")
    assert np.array_equal(low, mean) and np.array_equal(high, mean)
    with pytest.raises(ValueError, match="band='iqr'"):
        default.curve("val_loss", band="iqr")


def test_moving_average_and_ema_are_causal_and_exact():
    y = np.array([4.0, 2.0, np.nan, 6.0, 0.0])
    np.testing.assert_allclose(moving_average(y, 2), [4.0, 3.0, np.nan, 6.0, 3.0])
    np.testing.assert_allclose(moving_average(y, 3), [4.0, 3.0, np.nan, 4.0, 3.0])
    # debiased EMA: the first point is the first value, then (0.5*0.5*4 + 0.5*2) / (1 - 0.25) ...
    np.testing.assert_allclose(ema(y, 0.5), [4.0, (0.25 * 4 + 0.5 * 2) / 0.75, np.nan,
                                             (0.125 * 4 + 0.25 * 2 + 0.5 * 6) / 0.875,
                                             (0.0625 * 4 + 0.125 * 2 + 0.25 * 6) / 0.9375])
    assert smoother(None) is None and smoother(1) is None
    np.testing.assert_allclose(smoother({"ema": 0.5})(y), ema(y, 0.5), equal_nan=True)
    for bad in (-3, {"ema": 1.0}, "wide", True):
        with pytest.raises(ValueError):
            smoother(bad)


def test_the_reader_returns_what_the_trainer_wrote(tmp_path):
    """\r\n line ends, blank cells of columns that appeared later (NaN), inf/nan of a diverged step, a last
    line cut off mid-write (dropped)."""
    path = tmp_path / "steps.csv"
    write_csv(path, [{"step": 1, "loss": 2.5}, {"step": 2, "loss": float("inf"), "mu": 0.9},
                     {"step": 3, "loss": float("nan"), "x": -1.0}], ["step", "loss", "mu", "x"])
    assert b"\r\n" in path.read_bytes()
    with open(path, "a", newline="") as f:
        f.write("4,1.")
    columns = read_log(path)
    assert list(columns) == ["step", "loss", "mu", "x"]
    np.testing.assert_array_equal(columns["step"], [1, 2, 3])
    np.testing.assert_array_equal(columns["loss"], [2.5, np.inf, np.nan])
    np.testing.assert_array_equal(columns["mu"], [np.nan, 0.9, np.nan])
    (tmp_path / "empty.csv").write_text("step,loss\r\n")
    assert read_log(tmp_path / "empty.csv").empty and read_log(tmp_path / "missing.csv").empty
