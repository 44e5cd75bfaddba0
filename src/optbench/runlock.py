"""One writer per run directory: an exclusive lock (the well-kept ``filelock`` package, an ``flock`` on POSIX)
held by the process that trains the run, from before it reads the directory until it has written its last
file. A second process that finds the run locked says who holds it and does not touch it; a reader that finds a
summary saying ``running`` while nobody holds the lock knows its writer is gone (status ``interrupted``).

Where it works: local filesystems, and NFS v4 / Lustre / GPFS mounts where ``flock`` locks are shared between
hosts (Linux emulates flock with POSIX locks on NFS since 2.6.12). On filesystems without working locks
(some FUSE mounts, NFS v3 without lockd) two hosts can both take the lock: keep one results_dir per cluster
filesystem that supports locking, as SLURM sites usually provide.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import filelock

from optbench import rundir

# how long a run waits for its lock: long enough that a reader's brief check never makes a trainer give up
WAIT_SECONDS = 0.5


def owner() -> dict:
    """Who this process is, as recorded in summary.json while it holds a run."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._lock = filelock.FileLock(str(run_dir / rundir.LOCK))

    def acquire(self, wait: float = WAIT_SECONDS, record: bool = True) -> bool:
        """Take the lock (waiting up to ``wait`` seconds) and record this process as its owner; False if
        another process holds it."""
        try:
            self._lock.acquire(timeout=wait)
        except filelock.Timeout:
            return False
        if record:
            rundir.write_json(self.run_dir / rundir.OWNER, owner())
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)


def is_held(run_dir: Path) -> bool:
    """Whether a live process holds the run (tries the lock for an instant)."""
    if not (run_dir / rundir.LOCK).exists():
        return False
    probe = RunLock(run_dir)
    if not probe.acquire(wait=0, record=False):
        return True
    probe.release()
    return False


def describe_owner(run_dir: Path) -> str:
    """'pid 123 on host x (since ...)' from the holder's record (what the lock alone cannot tell)."""
    who = rundir.read_json(run_dir / rundir.OWNER) or {}
    if not who:
        return "another process (not yet recorded)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who.get("since", 0)))
    return f"pid {who.get('pid')} on host {who.get('host')} (since {since})"


def effective_status(run_dir: Path, summary: dict | None) -> str:
    """The summary's status ('unknown' without one), except that a 'running' run whose writer is gone (killed,
    host lost) is 'interrupted'."""
    status = (summary or {}).get("status", "unknown")
    if status == "running" and not is_held(run_dir):
        return "interrupted"
    return status
