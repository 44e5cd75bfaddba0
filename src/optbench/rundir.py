"""The run directory: the contract between trainer and plotter (DESIGN.md).

``<results_dir>/<task>/<optim>/<variant>/seed<N>/`` with config.yaml, metrics.csv, steps.csv,
checkpoint.pth, best.pth and summary.json. This module owns the names and paths, the CSV logs (which survive
a kill and are cut back to the checkpoint on resume) and the summary; it does not import torch, so readers of
results (the plotter) use it cheaply. Checkpoint files: optbench.checkpoints.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

METRICS = "metrics.csv"
STEPS = "steps.csv"
CHECKPOINT = "checkpoint.pth"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pth"
BEST = "best.pth"
SUMMARY = "summary.json"
CONFIG = "config.yaml"

# trainer settings that change the math, and so belong in the variant name
VARIANT_TRAINER_KEYS = ("staleness", "grad_clip", "amp")
# task keys that never change the math
_NON_VARIANT_TASK_KEYS = ("download", "eval_batch_size")


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def variant_name(cfg: Mapping, defaults: Mapping) -> str:
    """Readable, stable, filesystem-safe name of what differs from the (task, optim) defaults, or 'default'.

    ``cfg`` and ``defaults`` are plain dicts with 'optim', 'task' and 'trainer'. Optimizer keys appear bare
    (``lr=0.1``), task and trainer keys with their prefix (``task.epochs=5``)."""
    parts = []
    for section, prefix, skip in (("optim", "", ("name",)), ("task", "task.", ("name",) + _NON_VARIANT_TASK_KEYS)):
        new, old = _flatten(cfg.get(section, {})), _flatten(defaults.get(section, {}))
        for key in sorted(set(new) | set(old)):
            if key.split(".")[0] in skip:
                continue
            if new.get(key) != old.get(key):
                parts.append(f"{prefix}{key}={_fmt(new.get(key))}")
    trainer, trainer_defaults = cfg.get("trainer", {}), defaults.get("trainer", {})
    for key in VARIANT_TRAINER_KEYS:
        if trainer.get(key) != trainer_defaults.get(key):
            parts.append(f"trainer.{key}={_fmt(trainer.get(key))}")
    if not parts:
        return "default"
    name = re.sub(r"[^A-Za-z0-9._=,+\-\[\]]", "_", ",".join(parts))
    if len(name) > 120:
        name = name[:100] + "~" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return name


def run_path(results_dir: str | Path, task: str, optim: str, variant: str, seed: int) -> Path:
    return Path(results_dir) / task / optim / variant / f"seed{seed}"


RUN_GLOB = "*/*/*/seed*"  # every run directory under a results_dir, as run_path lays them out


class CsvLog:
    """Append-only CSV that flushes every row (a killed run keeps its log), widens its header when a new column
    appears, and can be cut back to the rows a checkpoint covers."""

    def __init__(self, path: Path):
        self.path = path
        self.fields: list[str] = []
        if path.exists():
            with open(path, newline="") as f:
                self.fields = next(csv.reader(f), [])

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: Iterable[Mapping]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row: Mapping[str, Any]) -> None:
        new = [k for k in row if k not in self.fields]
        if new or not self.path.exists():
            old_rows = self.rows()
            self.fields += new
            self._rewrite(old_rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, restval="").writerow({k: _cell(v) for k, v in row.items()})

    def truncate(self, column: str, last: int) -> None:
        """Keep the rows with int(row[column]) <= last (resume from a checkpoint taken at ``last``)."""
        if self.path.exists():
            self._rewrite(r for r in self.rows() if int(r[column]) <= last)


def _cell(value: Any) -> Any:
    if hasattr(value, "item"):  # a 0-dim tensor or numpy scalar
        value = value.item()
    if isinstance(value, float):
        return repr(value)  # round-trips exactly, so a resumed run's CSV equals an uninterrupted one's
    return value


def write_json(path: Path, data: Mapping) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_summary(run_dir: Path) -> dict | None:
    path = run_dir / SUMMARY
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
