"""A run's life in its directory, around the trainer: claiming the directory (the lock), deciding whether an
existing run may be resumed with this config, and keeping summary.json true across attempts.

States (summary.json ``status``): running (a live process holds the lock), finished (also when early stopping
ended it: ``stop_reason: patience``), reached (its trainer.stop_at target: ``stop_reason: stop_at``), diverged,
failed (an error; the message is in ``error``), interrupted (stopped by a signal after saving, or its process
died: a reader that finds ``running`` without a lock holder reports interrupted). Re-running the same command
resumes running/failed/interrupted runs from their checkpoint and leaves finished, reached and diverged ones
alone (rundir.SETTLED).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from optbench import distributed, rundir
from optbench.errors import ConfigError, RunLockedError
from optbench.fingerprint import differences, fingerprint
from optbench.runlock import RunLock, describe_owner, owner

DONE = rundir.SETTLED


@contextlib.contextmanager
def claimed(run_dir: Path, results_dir: Path, ctx: distributed.Context) -> Iterator[None]:
    """Hold the run directory's lock (rank 0 takes it for all processes of a torchrun job) for the block. A
    directory made here that is left holding nothing but its lock (a configuration or dataset error before
    anything was written) is removed again, with its empty parents."""
    created = not run_dir.exists()
    lock = RunLock(run_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ok = lock.acquire() if ctx.is_main else True
    if not distributed.agree(ctx, ok):
        if ctx.is_main and created:
            _remove_if_empty(run_dir, results_dir)
        raise RunLockedError(run_dir, f"{run_dir} is being run by {describe_owner(run_dir)}; "
                             "not touched (wait for it, or stop that process)")
    try:
        yield
    finally:
        lock.release()
        if ctx.is_main and created:
            _remove_if_empty(run_dir, results_dir)


_BOOKKEEPING = (rundir.LOCK, rundir.OWNER)


def _remove_if_empty(run_dir: Path, results_dir: Path) -> None:
    if any(p.name not in _BOOKKEEPING for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    folder = run_dir.parent
    while folder != results_dir and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def clear(run_dir: Path) -> None:
    """resume=false: everything of the old run goes, except the lock this process holds."""
    for path in run_dir.iterdir():
        if path.name not in _BOOKKEEPING:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def prune(run_dir: Path, keep: str) -> None:
    """trainer.keep, once a run has finished (or reached its target): last keeps checkpoint.pth and best.pth,
    best only best.pth, all every file (checkpoint.prev.pth only matters while a run can still be interrupted)."""
    drop = {"last": [rundir.PREVIOUS_CHECKPOINT], "best": [rundir.PREVIOUS_CHECKPOINT, rundir.CHECKPOINT]}
    for name in drop.get(keep, []):
        (run_dir / name).unlink(missing_ok=True)


def resumable_changes(run_dir: Path, cfg: Mapping, summary: dict | None) -> dict[str, list]:
    """Check that ``cfg`` may resume the run in ``run_dir`` (the keys that change the math or the logs'
    meaning are those it started with); returns the free keys that differ, {key: [then, now]}."""
    original = _original_config(run_dir)
    if original is None:
        return {}
    recorded = (summary or {}).get("fingerprint")
    if recorded and fingerprint(original) != recorded:
        raise ConfigError(f"cannot resume {run_dir}: its config.yaml no longer matches the config the run started "
                          "with (edited by hand?); restore it, or pass resume=false to start over")
    fixed = differences(original, cfg, fixed=True)
    if fixed:
        listed = ", ".join(f"{key}={then!r} (now {now!r})" for key, (then, now) in fixed.items())
        raise ConfigError(f"cannot resume {run_dir}: it was started with {listed}. Re-run with those values, pass "
                          "resume=false to start over, or copy the run directory to branch it (README: Runs and "
                          "their states)")
    return differences(original, cfg, fixed=False)


def _original_config(run_dir: Path) -> dict | None:
    path = run_dir / rundir.CONFIG
    if not (run_dir / rundir.CHECKPOINT).exists() or not path.exists():
        return None
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot resume {run_dir}: {path.name} is unreadable ({err}); restore it, or pass "
                          "resume=false to start over") from None


class RunRecord:
    """summary.json across attempts: the run's identity and fingerprint, its progress, and one entry per
    attempt (start, end, status, process, the free settings it changed)."""

    def __init__(self, run_dir: Path, cfg: Mapping, previous: dict | None, changed: dict) -> None:
        self.path = run_dir / rundir.SUMMARY
        original = _original_config(run_dir) or cfg
        self.identity = {"task": cfg["task"]["name"], "optim": cfg["optim"]["name"], "seed": cfg["seed"],
                         "fingerprint": fingerprint(original)}
        self.owner = owner()
        self.attempts = [dict(a, status="interrupted") if a.get("status") == "running" else a  # its process died
                         for a in (previous or {}).get("attempts") or []]
        self.attempt: dict[str, Any] = {"start": self.owner["since"], "end": None, "status": "running",
                                        "pid": self.owner["pid"], "host": self.owner["host"], "changed": changed}
        self.attempts.append(self.attempt)

    def write(self, status: str, progress: Mapping[str, Any], **details: Any) -> None:
        now = time.time()
        self.attempt.update(status=status, end=None if status == "running" else now)
        summary = {**self.identity, "status": status, **progress, **details, "attempts": self.attempts,
                   "owner": self.owner if status == "running" else None,
                   "wall_time_s": sum((a["end"] or now) - a["start"] for a in self.attempts)}
        rundir.write_json(self.path, summary)
