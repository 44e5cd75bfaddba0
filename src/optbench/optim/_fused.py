"""Fused CPU kernels: an optimizer's multi-tensor update compiled by torch.compile (Inductor) into vectorised
C++/OpenMP loops, so each tensor crosses memory once per step instead of once per operation.

Why: on the CPU an eager update is a chain of elementwise ATen calls (AggMo: five, AdamP: a dozen), each one
streaming its operands through memory. Fused, AggMo reads p, g and its two buffers once and writes three.

How the kernels are written: as expressions over tensors (``p.copy_(p - total * lr)``), never with Python
floats in ``alpha=`` arguments, and with every value that changes between steps (lr, bias corrections) passed
as a tensor, so a schedule changing lr never recompiles. Hyperparameters that select code (betas, nesterov) are
Python constants and guard the compiled graph. One compiled call covers a whole parameter group: a compiled
call costs 50-150 us on the CPU, too much to pay per tensor. The price is a compilation per model (shapes are
static): about 35 s for a ResNet-18 on 2 cores the first time, about 5 s once Inductor's on-disk cache holds it.

The same kernel runs eagerly when compilation is unavailable: ``OPTBENCH_FUSED=0`` in the environment, or a
failed compilation (no C++ compiler, an old torch), which warns once and falls back for the whole process.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Callable

import torch

# fused=None picks the fused path on the CPU for parameter groups at least this large: below it the one-off
# compilation (seconds) outweighs what the fused loop saves
MIN_ELEMENTS = 1 << 20

_failure: str | None = None
_log = logging.getLogger(__name__)


def enabled() -> bool:
    """Whether fused kernels are compiled in this process (else they run eagerly)."""
    return _failure is None and os.environ.get("OPTBENCH_FUSED", "1") != "0"


def scalar(value: float | list[float]) -> torch.Tensor:
    """Per-step values as a kernel input: a float64 CPU tensor (changing it never recompiles)."""
    return torch.tensor(value, dtype=torch.float64)


class FusedKernel:
    """A multi-tensor update function (use as its decorator), compiled on first use; eager where compilation is
    off or failed."""

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn
        self._compiled: Callable[..., None] | None = None

    def __call__(self, *args, **kwargs) -> None:
        global _failure
        if not enabled():
            return self.fn(*args, **kwargs)
        first = self._compiled is None
        if first:
            self._compiled = torch.compile(self.fn, dynamic=False, fullgraph=True)
            _log.info("optbench: compiling the fused CPU kernel %s (first step only; OPTBENCH_FUSED=0 skips it)",
                      self.fn.__name__)
            start = time.perf_counter()
        try:
            result = self._compiled(*args, **kwargs)
            if first:
                _log.info("optbench: compiled %s in %.1f s", self.fn.__name__, time.perf_counter() - start)
            return result
        except Exception as exc:  # compilation failed: nothing was written yet, so eager is safe
            _failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(
                f"optbench: torch.compile of the fused optimizer kernel {self.fn.__name__} failed ({_failure}); "
                "running the same update eagerly from now on (slower, same math). Install a C++ compiler "
                "(g++) for the fused CPU path, or set OPTBENCH_FUSED=0 to skip the attempt.",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.fn(*args, **kwargs)
