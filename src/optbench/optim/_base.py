"""The ``step()`` that AggMo, Expectigrad, AdamP and SGDP share, so each of their modules holds only its math.

What it does around a subclass's update functions:
- ``step(closure)`` with the closure evaluated under ``enable_grad``; parameters without a gradient are skipped
  (no state is created for them); sparse gradients are a clear error.
- Dispatch to one of three paths with the same math: the per-tensor update, the multi-tensor
  (``torch._foreach_*``) update on buckets of one (device, dtype), or the fused kernel on the same buckets
  (``_fused``: the update compiled into one loop per tensor, CPU only). ``foreach=None, fused=None`` pick: off
  the CPU the multi-tensor path; on the CPU the fused kernel for groups of at least ``_fused.MIN_ELEMENTS``
  elements, else the per-tensor path (as fast as multi-tensor on the CPU: its temporaries stay in cache).
- Precision: float16/bfloat16 parameters keep their optimizer state in float32 (a 16-bit EMA cannot represent
  a decay such as 0.999, and a 16-bit running sum stops growing after a few hundred steps); their update is
  computed on a float32 working copy and rounded into the parameter once per step. ``load_state_dict`` keeps
  that float32 state (torch's loader would cast it to the parameter's dtype).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from optbench.optim import _fused
from optbench.optim._common import evaluate_closure, group_by_device_and_dtype, params_with_grad

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def state_dtype(param: torch.Tensor) -> torch.dtype:
    """dtype of the optimizer state (and of the arithmetic) for ``param``."""
    return torch.float32 if param.dtype in _LOW_PRECISION else param.dtype


def zeros_state(param: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(param, dtype=state_dtype(param), memory_format=torch.preserve_format)


def check_paths(foreach: bool | None, fused: bool | None) -> None:
    """Constructor check of the path arguments (the choice itself is made per step, on the tensors)."""
    if fused and foreach:
        raise ValueError("fused=True and foreach=True are two different code paths; pass at most one of them")


def choose_path(group: dict, params: list[torch.Tensor], has_fused: bool) -> str:
    """'fused', 'foreach' or 'single' for this group's parameters (see the module docstring)."""
    fused, foreach = group.get("fused"), group.get("foreach")
    on_cpu = all(p.device.type == "cpu" for p in params)
    if fused:
        if not has_fused:
            raise RuntimeError("this optimizer has no fused kernel; use foreach=True or False")
        if not on_cpu:
            raise RuntimeError(
                "fused=True runs compiled CPU kernels; on a GPU use the multi-tensor path (foreach=None or True)")
        return "fused"
    if foreach is not None:
        return "foreach" if foreach else "single"
    if not on_cpu:
        return "foreach"
    if fused is None and has_fused and sum(p.numel() for p in params) >= _fused.MIN_ELEMENTS:
        return "fused"
    return "single"


SLICE_ELEMENTS = 1 << 17  # 256 KiB of float32 per tensor: a few such slices stay in the L2 cache


def for_slices(kernel: Callable[..., None], tensors: list, **scalars: Any) -> None:
    """Run an elementwise in-place ``kernel(*tensors, **scalars)`` on cache-sized slices along dim 0 (CPU).

    A chain of elementwise operations on whole tensors streams every operand through memory once per operation;
    slice by slice, the chain runs while the slice is in the cache, so each tensor crosses the memory bus about
    once. The result is identical (elementwise math). ``tensors`` share their size along dim 0 (parameters,
    gradients, state, per-row factors shaped (rows, 1, ...)); None entries are passed through."""
    first = tensors[0]
    if first.device.type != "cpu" or first.dim() == 0 or first.numel() <= SLICE_ELEMENTS:
        kernel(*tensors, **scalars)
        return
    rows = first.shape[0]
    step = max(1, SLICE_ELEMENTS // (first.numel() // rows))
    for start in range(0, rows, step):
        kernel(*(None if t is None else t[start:start + step] for t in tensors), **scalars)


def add_scaled_(ps: list[torch.Tensor], xs: list[torch.Tensor], scales: list[float]) -> None:
    """ps[i] += scales[i] * xs[i]; one fused call when the scales agree (parameters stepped equally often)."""
    if len(set(scales)) == 1:
        torch._foreach_add_(ps, xs, alpha=scales[0])
    else:
        torch._foreach_add_(ps, torch._foreach_mul(xs, scales))


def _to_state_precision(value: Any, param: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(device=param.device, dtype=state_dtype(param))
    if isinstance(value, torch.Tensor):
        return value.to(device=param.device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_state_precision(v, param) for v in value)
    return value


class PaperOptimizer(torch.optim.Optimizer):
    """Base class: subclasses define ``_init_state``, ``_single_tensor_update`` and ``_multi_tensor_update``.

    ``_init_state(param, group) -> dict`` builds a parameter's state on its first step (use ``zeros_state``).
    ``_single_tensor_update(group, param, grad, state)`` and
    ``_multi_tensor_update(group, params, grads, states)`` update parameters in place; they receive tensors of
    one dtype (the state dtype) and must not modify ``grad``.
    """

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("fused", None)

    def _init_state(self, param: torch.Tensor, group: dict) -> dict:
        raise NotImplementedError

    def _single_tensor_update(self, group: dict, param: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        raise NotImplementedError

    def _multi_tensor_update(self, group: dict, params: list, grads: list, states: list) -> None:
        raise NotImplementedError

    # optional: the same update as a compiled kernel (optim/_fused.py); same contract as _multi_tensor_update
    _fused_update: Callable[..., None] | None = None

    def _state_of(self, param: torch.Tensor, group: dict) -> dict:
        state = self.state[param]
        if not state:
            state.update(self._init_state(param, group))
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = evaluate_closure(closure)
        name = type(self).__name__
        for group in self.param_groups:
            params = list(params_with_grad(group, name))
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self._state_of(p, group) for p in params]
            path = choose_path(group, params, self._fused_update is not None)
            if path in ("foreach", "fused"):
                update = self._fused_update if path == "fused" else self._multi_tensor_update
                buckets = group_by_device_and_dtype([params, grads, states])
                for bucket_params, bucket_grads, bucket_states in buckets.values():
                    work, work_grads = _working_copies(bucket_params, bucket_grads)
                    update(group, work, work_grads, bucket_states)
                    _write_back(bucket_params, work)
            else:
                for p, g, state in zip(params, grads, states):
                    (work,), (work_grad,) = _working_copies([p], [g])
                    self._single_tensor_update(group, work, work_grad, state)
                    _write_back([p], [work])
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, param in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id)
            if saved is not None and state_dtype(param) != param.dtype:
                self.state[param] = {k: _to_state_precision(v, param) for k, v in saved.items()}


def _working_copies(params: list, grads: list) -> tuple[list, list]:
    """The tensors the update runs on: the parameters themselves, or float32 copies of 16-bit ones."""
    if params[0].dtype not in _LOW_PRECISION:
        return list(params), grads
    return [p.float() for p in params], [g.float() for g in grads]


def _write_back(params: list, work: list) -> None:
    for p, w in zip(params, work):
        if w.data_ptr() != p.data_ptr():
            p.copy_(w)
