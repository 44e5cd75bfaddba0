"""The run directory: the contract between trainer and plotter (DESIGN.md).

``<results_dir>/<task>/<optim>/<variant>/seed<N>/`` with config.yaml, metrics.csv, steps.csv,
checkpoint.pth, best.pth and summary.json. This module owns the names and paths, the CSV logs (which survive
a kill, skip a half-written last line, and are cut back to the checkpoint on resume) and the summary (strict
JSON, written atomically); it does not import torch, so readers of results (the plotter) use it cheaply.
Checkpoint files: optbench.checkpoints; who may write a run: optbench.runlock.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

METRICS = "metrics.csv"
STEPS = "steps.csv"
CHECKPOINT = "checkpoint.pth"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pth"
BEST = "best.pth"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
LOCK = ".lock"
OWNER = ".owner"  # who holds the lock (pid, host, since), written by the holder

# summary.json statuses (optbench.lifecycle): a run that ended with its final numbers (finished, or reached its
# trainer.stop_at target), and one whose numbers will no longer change (those, or diverged): re-running the
# command leaves a settled run alone, and readers take final values from FINAL runs only
FINAL = ("finished", "reached")
SETTLED = FINAL + ("diverged",)

# trainer settings that change the math (or where a run stops), and so belong in the variant name
VARIANT_TRAINER_KEYS = ("staleness", "grad_clip", "amp", "stop_at", "patience", "nt_asgd")
# optimizer keys that take the task's value unless the optimizer config sets its own (configs/config.yaml)
_FOLLOWS_TASK = ("weight_decay",) + tuple(f"lr_schedule.{key}" for key in (
    "name", "milestones", "lr_decay", "min_factor", "unit", "warmup_steps", "factor", "patience", "threshold",
    "metric"))
# task keys that never change the math
_NON_VARIANT_TASK_KEYS = ("download", "eval_batch_size", "num_workers")


def higher_is_better(metric: str) -> bool:
    """A metric whose name ends in 'acc' is better when higher; loss, sse, ppl when lower."""
    return metric.endswith("acc")


def lookup(config: Mapping, dotted: str, default: Any = None) -> Any:
    """config['a']['b'] for 'a.b'; default where a key is missing."""
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``optim.lr``); tuples as lists, so a config read back from YAML compares
    equal to the one it was written from."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def _fmt(value: Any) -> str:
    """A value as it appears in a variant name: exact (floats by repr, so 0.1234561 and 0.1234564 differ)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


MAX_VARIANT = 120


def variant_name(cfg: Mapping, defaults: Mapping) -> str:
    """Readable, stable, filesystem-safe name of what differs from the (task, optim) defaults, or 'default'.

    ``cfg`` and ``defaults`` are plain dicts with 'optim', 'task' and 'trainer'. Optimizer keys appear bare
    (``lr=0.1``), task and trainer keys with their prefix (``task.epochs=5``). Values are exact; a name that is
    too long, or whose characters had to be replaced, ends in a hash of the whole variant, so two configs that
    differ anywhere never share a directory."""
    parts = []
    task = flatten(cfg.get("task", {}))
    for section, prefix, skip in (("optim", "", ("name",)), ("task", "task.", ("name",) + _NON_VARIANT_TASK_KEYS)):
        new, old = flatten(cfg.get(section, {})), flatten(defaults.get(section, {}))
        for key in sorted(set(new) | set(old)):
            if key.split(".")[0] in skip or new.get(key) == old.get(key):
                continue
            if section == "optim" and key in _FOLLOWS_TASK and new.get(key) == task.get(key):
                continue  # the optimizer follows the task's setting: the task.* part names the change
            parts.append(f"{prefix}{key}={_fmt(new.get(key))}")
    trainer, trainer_defaults = cfg.get("trainer", {}), defaults.get("trainer", {})
    parts += [f"trainer.{key}={_fmt(trainer.get(key))}" for key in VARIANT_TRAINER_KEYS
              if trainer.get(key) != trainer_defaults.get(key)]
    if not parts:
        return "default"
    exact = ",".join(parts)
    name = re.sub(r"[^A-Za-z0-9._=,+\-\[\]]", "_", exact)
    if name != exact or len(name) > MAX_VARIANT:
        name = name[:MAX_VARIANT - 13] + "~" + hashlib.sha1(exact.encode()).hexdigest()[:12]
    return name


def run_path(results_dir: str | Path, task: str, optim: str, variant: str, seed: int) -> Path:
    return Path(results_dir) / task / optim / variant / f"seed{seed}"


RUN_GLOB = "*/*/*/seed*"  # every run directory under a results_dir, as run_path lays them out


def _is_number(cell: str | None) -> bool:
    if cell in ("", None):
        return True
    try:
        float(cell)
        return True
    except ValueError:
        return False


class CsvLog:
    """Append-only CSV that flushes every row (a killed run keeps its log), widens its header when a new column
    appears, and can be cut back to the rows a checkpoint covers. Reading skips rows that are not complete rows
    of numbers (a line cut off by a kill or a full disk), with a warning."""

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
            reader = csv.reader(f)
            header = next(reader, [])
            rows = list(reader)
        good = [dict(zip(header, r)) for r in rows if len(r) == len(header) and all(map(_is_number, r))]
        if len(good) < len(rows):
            warnings.warn(f"optbench: skipped {len(rows) - len(good)} incomplete or unreadable line(s) of "
                          f"{self.path}", RuntimeWarning, stacklevel=2)
        return good

    def _rewrite(self, rows: Iterable[Mapping]) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, self.fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.path, text.getvalue().encode())

    def append(self, row: Mapping[str, Any]) -> None:
        new = [k for k in row if k not in self.fields]
        if new or not self.path.exists():
            old_rows = self.rows()
            self.fields += new
            self._rewrite(old_rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, restval="").writerow({k: _cell(v) for k, v in row.items()})

    def truncate(self, column: str, last: int) -> None:
        """Keep the rows with row[column] <= last (resume from a checkpoint taken at ``last``)."""
        if self.path.exists():
            self._rewrite([r for r in self.rows() if r.get(column) and float(r[column]) <= last])


def _cell(value: Any) -> Any:
    if hasattr(value, "item"):  # a 0-dim tensor or numpy scalar
        value = value.item()
    if isinstance(value, float):
        return repr(value)  # round-trips exactly, so a resumed run's CSV equals an uninterrupted one's
    return value


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None, as strict JSON requires."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_atomic(path: Path, data: bytes | memoryview, keep_previous: Path | None = None) -> None:
    """Write a file so that a kill or a full disk leaves either the old file or the new one: a temporary file,
    flushed to disk, renamed over ``path`` (the old one kept as ``keep_previous``). A failed write removes the
    temporary and raises OSError naming ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def sync_directory(folder: Path) -> None:
    """fsync a directory, so a rename in it survives a power loss (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data: Mapping) -> None:
    text = json.dumps(strict_json(data), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    write_atomic(path, text.encode())


def read_json(path: Path) -> dict | None:
    """A JSON object file as a dict; None when it is missing or unreadable (not JSON, not an object)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_summary(run_dir: Path) -> dict | None:
    return read_json(run_dir / SUMMARY)
