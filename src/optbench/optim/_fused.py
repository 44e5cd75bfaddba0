"""The fused CPU path: an optimizer's per-tensor update expression compiled by torch.compile (Inductor) into
one vectorised C++/OpenMP loop per tensor, so each tensor crosses memory once per step instead of once per
operation.

Why: on the CPU an eager update is a chain of elementwise ATen calls (AggMo: five, AdamP: a dozen), each one
streaming its operands through memory. Fused, AggMo reads p, g and its two buffers once and writes three.

There is no third copy of any update: what is compiled is the optimizer's per-tensor expression (the same
function its per-tensor path runs eagerly), called in a loop over the tensors of one parameter group. One
compiled call covers the whole group, because a compiled call costs 50-150 us on the CPU, too much to pay per
tensor. Values that change between steps (lr, bias corrections) enter as float64 tensors, so a schedule
never recompiles; hyperparameters that select code (betas, nesterov) are Python constants that guard the graph.

When it pays: compilation costs seconds per model (about 35 s for a ResNet-18 on 2 cores with a cold Inductor
cache, 5 s warm) and saves about a nanosecond per element and step, so ``pays_off`` weighs the two from the
run's expected number of steps (``PaperOptimizer.plan``). Without a plan, groups of >= ``MIN_ELEMENTS`` compile.

The same loop runs eagerly when compilation is unavailable: ``OPTBENCH_FUSED=0`` in the environment, or a
failed compilation (no C++ compiler, an old torch), which warns once and falls back for the whole process.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch

# below this many elements per group the fused loop saves too little to be worth a compilation
MIN_ELEMENTS = 1 << 20
# measured on a 2-core Xeon (benchmarks/README.md): compile time per tensor with a cold cache, and the time the
# fused loop saves over the eager per-tensor path per element and step (the smallest saving, AggMo's)
COMPILE_SECONDS_PER_TENSOR = 0.6
SAVED_SECONDS_PER_ELEMENT_STEP = 1.0e-9

_failure: str | None = None
_log = logging.getLogger(__name__)


def enabled() -> bool:
    """Whether fused kernels are compiled in this process (else they run eagerly)."""
    return _failure is None and os.environ.get("OPTBENCH_FUSED", "1") != "0"


def pays_off(params: Sequence[torch.Tensor], expected_steps: int | None) -> bool:
    """Whether compiling this group's update saves more time than the compilation costs."""
    elements = sum(p.numel() for p in params)
    if elements < MIN_ELEMENTS:
        return False
    if expected_steps is None:
        return True
    saved = expected_steps * elements * SAVED_SECONDS_PER_ELEMENT_STEP
    return saved >= COMPILE_SECONDS_PER_TENSOR * len(params)


def as_kernel_input(values: Mapping[str, Any]) -> dict[str, Any]:
    """Per-step values as compiled-kernel inputs: numbers and lists of numbers become float64 CPU tensors
    (changing them never recompiles); tensors pass as they are."""
    return {k: v if v is None or isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float64)
            for k, v in values.items()}


def _loop(kernel: Callable[..., Any], tensors: Sequence[Sequence | None], per_tensor: Mapping[str, Any],
          shared: Mapping[str, Any], constants: Mapping[str, Any]) -> Any:
    """kernel(tensors[0][i], tensors[1][i], ..., per-tensor values [i], shared values, constants) for each i;
    returns the sum of what the calls return (None if they return nothing)."""
    return summed([kernel(*(None if ts is None else ts[i] for ts in tensors),
                          **{k: v[i] for k, v in per_tensor.items()}, **shared, **constants)
                   for i in range(len(tensors[0]))])


def summed(results: list) -> Any:
    """The sum of a kernel's per-tensor (or per-slice) results, None when it returns nothing."""
    results = [r for r in results if r is not None]
    if not results:
        return None
    return results[0] if len(results) == 1 else torch.stack(results).sum(0)


def _loop_of(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """``_loop`` bound to one kernel, with a code object of its own: TorchDynamo keeps its compiled graphs (and
    its recompilation limit) per code object, so each kernel must not share one with the others."""
    def loop(tensors, per_tensor, shared, constants):
        return _loop(kernel, tensors, per_tensor, shared, constants)

    loop.__code__ = loop.__code__.replace(co_name=f"fused_{kernel.__name__}")
    return loop


class FusedLoop:
    """``_loop`` over one per-tensor kernel, compiled on first use; eager where compilation is off or failed."""

    def __init__(self, kernel: Callable[..., Any]) -> None:
        self.kernel = kernel
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, tensors: Sequence[Sequence | None], per_tensor: Mapping[str, Any],
                 shared: Mapping[str, Any], constants: Mapping[str, Any]) -> Any:
        args = (tensors, as_kernel_input(per_tensor), as_kernel_input(shared), constants)
        if not enabled():
            return _loop(self.kernel, *args)
        first = self._compiled is None
        if first:
            self._compiled = torch.compile(_loop_of(self.kernel), dynamic=False, fullgraph=True)
            _log.info("optbench: compiling the fused CPU kernel %s for %d tensors (first step only; "
                      "OPTBENCH_FUSED=0 skips it)", self.kernel.__name__, len(tensors[0]))
            start = time.perf_counter()
        try:
            result = self._compiled(*args)
        except Exception as exc:  # compilation failed: nothing was written yet, so eager is safe
            _fall_back(self.kernel.__name__, exc)
            return _loop(self.kernel, *args)
        if first:
            _log.info("optbench: compiled %s in %.1f s", self.kernel.__name__, time.perf_counter() - start)
        return result


_LOOPS: dict[tuple, FusedLoop] = {}


def fused_loop(kernel: Callable[..., Any], params: Sequence[torch.Tensor]) -> FusedLoop:
    """The compiled loop of a kernel for parameters of these shapes and dtypes, shared by every optimizer of such
    a model in the process (a new model compiles anew instead of piling up TorchDynamo recompilations)."""
    key = (kernel, tuple((tuple(p.shape), p.dtype, p.stride()) for p in params))
    if key not in _LOOPS:
        _LOOPS[key] = FusedLoop(kernel)
    return _LOOPS[key]


def _fall_back(name: str, exc: Exception) -> None:
    global _failure
    _failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    warnings.warn(
        f"optbench: torch.compile of the fused optimizer kernel {name} failed ({_failure}); running the same "
        "update eagerly from now on (slower, same math). Install a C++ compiler (g++) for the fused CPU path, or "
        "set OPTBENCH_FUSED=0 to skip the attempt.",
        RuntimeWarning,
        stacklevel=3,
    )
