"""Checkpoint files of a run directory: written atomically, read back with a fallback to the previous one."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from optbench.errors import RunStoreError
from optbench.rundir import CHECKPOINT, PREVIOUS_CHECKPOINT, write_atomic


def save_atomic(obj: Any, path: Path, keep_previous: Path | None = None) -> None:
    """torch.save through a temporary file, flushed to disk, then renamed: a kill or a full disk mid-write never
    leaves a half-written checkpoint (nor the temporary). With keep_previous, the last good file is kept there.
    Serialised in memory first, so a full disk is a plain OSError naming the file (torch's own file writer
    reports it as an iostream error)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer(), keep_previous)


class CorruptCheckpointError(RunStoreError):
    """No checkpoint of the run can be read."""


def load_checkpoint(run_dir: Path, map_location) -> dict | None:
    """The newest readable checkpoint of a run (falling back to the previous one), None when there is none;
    a clear error when files exist but none can be read, so no work is silently thrown away."""
    candidates = [run_dir / CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT]
    errors = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # truncated or garbled file
            first_line = (str(err).strip().splitlines() or [""])[0][:160]
            errors.append(f"{path.name} unreadable ({type(err).__name__}: {first_line})")
    if errors:
        raise CorruptCheckpointError(
            f"cannot resume {run_dir}: no readable checkpoint (" + "; ".join(errors) + "). Restore the file, or delete "
            "the run directory (or pass resume=false) to start this run again from scratch."
        )
    return None
