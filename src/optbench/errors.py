"""Errors a user can act on. The command line prints each as one line (``optbench: error: ...``) and exits with
its ``exit_code``; ``HYDRA_FULL_ERROR=1`` shows the traceback instead.

Exit codes of ``python main.py``: 0 the run finished, diverged, or was already done; 1 a run-store failure (an
unwritable disk, an unreadable checkpoint); 2 a configuration or dataset error (nothing was written); 3 another
process holds the run (it was not run); 128 + N stopped by signal N after saving its checkpoint.
"""

from __future__ import annotations


class OptbenchError(Exception):
    exit_code = 1


class ConfigError(OptbenchError, ValueError):
    """A bad configuration, found before any data is loaded or any step is taken."""

    exit_code = 2


class RunStoreError(OptbenchError):
    """The run directory cannot be written or read as it must be; the run resumes once it is fixed."""


class RunLockedError(OptbenchError):
    """Another process holds the run directory."""

    exit_code = 3

    def __init__(self, run_dir, message: str):
        super().__init__(message)
        self.run_dir = run_dir


class RunInterrupted(OptbenchError):
    """Stopped by a signal after writing the checkpoint and the logs; the same command resumes the run."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
