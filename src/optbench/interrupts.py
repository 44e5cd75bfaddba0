"""Graceful stop: SIGTERM (scancel, a pre-empting scheduler), SIGINT (Ctrl-C) and SIGUSR1 (what submitit sends
before a SLURM time limit) ask the trainer to stop after the current step; it then writes its checkpoint and
logs, records status ``interrupted`` and exits with 128 + the signal number, so re-running the same command
resumes exactly where it stopped. A second signal stops at once (KeyboardInterrupt).

A handler that was installed before (submitit's SIGUSR1 handler, which re-queues the job) is called after the
checkpoint is written, so the scheduler's own requeue still happens.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGUSR1")) if s is not None)


class GracefulStop:
    """Context manager; ``signum`` is the first signal received (None while none came)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():  # signals can only be handled there
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}: stopping now")
        self.signum = signum
        print(f"optbench: {signal.Signals(signum).name} received, stopping after this step (again to stop now)",
              file=sys.stderr, flush=True)

    def pass_on(self) -> None:
        """Call the handler that was installed before ours for the signal received (e.g. submitit's requeue)."""
        previous: Callable | Any = self._previous.get(self.signum) if self.signum is not None else None
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.signum, None)
