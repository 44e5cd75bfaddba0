"""The one base of every optimizer in optbench.optim, so each paper's module holds only its math.

What ``PaperOptimizer.step(closure)`` does around a subclass's update:
- evaluates the closure under ``enable_grad``; skips parameters without a gradient (no state is created for
  them); rejects sparse gradients with a clear error;
- gathers each group's parameters into buckets of one (device, dtype), the unit the multi-tensor kernels take;
- chooses each group's code path (``choose_path``): the per-tensor expression run eagerly ('single'), the same
  expression compiled for the CPU ('fused', optim/_fused.py), or the multi-tensor ``torch._foreach_*`` form
  ('foreach'). ``foreach`` and ``fused`` are group keys like lr (None: chosen from the device, the group's size
  and the run's expected number of steps, see ``plan``);
- keeps 16-bit parameters' state in float32 (a 16-bit EMA cannot represent a decay such as 0.999, and a 16-bit
  running sum stops growing after a few hundred steps): the update runs on float32 working copies, rounded into
  the parameters once per step; ``load_state_dict`` keeps that float32 state (torch's loader would cast it).

A subclass either describes its update as a per-tensor kernel (``kernel``, ``kernel_inputs``) plus a
multi-tensor form (``multi_tensor_update``), or, when its step couples all parameters (one hypergradient, one
tuner), overrides ``update(buckets)`` and runs its kernels through ``run_kernel``.

The trainer protocol (optim/protocol.py), with defaults here: ``set_lr_factor``, ``extras``, ``plan``,
``attach_gradient_delay``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from optbench.optim import _fused, protocol

Tensor = torch.Tensor
LOW_PRECISION = (torch.float16, torch.bfloat16)


def state_dtype(param: Tensor) -> torch.dtype:
    """dtype of the optimizer state (and of the arithmetic) for ``param``."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype


def zeros_state(param: Tensor) -> Tensor:
    return torch.zeros_like(param, dtype=state_dtype(param), memory_format=torch.preserve_format)


def check_paths(foreach: bool | None, fused: bool | None) -> None:
    """Constructor check of the path arguments (the choice itself is made per step, on the tensors)."""
    if fused and foreach:
        raise ValueError("fused=True and foreach=True are two different code paths; pass at most one of them")


def choose_path(params: Sequence[Tensor], foreach: bool | None, fused: bool | None, has_fused: bool,
                expected_steps: int | None = None) -> str:
    """'fused', 'foreach' or 'single' for one group's parameters (see the module docstring)."""
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
    if fused is None and has_fused and _fused.pays_off(params, expected_steps):
        return "fused"
    return "single"


SLICE_ELEMENTS = 1 << 17  # 512 KiB of float32 per tensor: a few such slices stay in the L2 cache


def for_slices(kernel: Callable[..., Any], tensors: Sequence, **scalars: Any) -> Any:
    """``kernel(*tensors, **scalars)`` on cache-sized slices along dim 0 (CPU); returns the sum of its results.

    A chain of elementwise operations on whole tensors streams every operand through memory once per operation;
    slice by slice, the chain runs while the slice is in the cache, so each tensor crosses the memory bus about
    once. Elementwise kernels give identical results. ``tensors`` (or lists of them) share their size along
    dim 0; None entries pass through."""
    first = tensors[0]
    if first.device.type != "cpu" or first.dim() == 0 or first.numel() <= SLICE_ELEMENTS:
        return kernel(*tensors, **scalars)
    rows = first.shape[0]
    step = max(1, SLICE_ELEMENTS // (first.numel() // rows))
    return _fused.summed([kernel(*(_slice(t, start, step) for t in tensors), **scalars)
                          for start in range(0, rows, step)])


def _slice(t: Any, start: int, length: int) -> Any:
    if t is None:
        return None
    if isinstance(t, (list, tuple)):
        return type(t)(_slice(x, start, length) for x in t)
    return t[start:start + length]


def add_scaled_(ps: list[Tensor], xs: list[Tensor], scales: Sequence[float | Tensor]) -> None:
    """ps[i] += scales[i] * xs[i]; scales are numbers, or 0-dim tensors of the params' dtype and device.

    One fused call when the scales agree (parameters stepped equally often); on the CPU tensor scales take one
    broadcasting addcmul per tensor, which reads p and x once."""
    if all(not isinstance(s, Tensor) for s in scales):
        if len(set(scales)) == 1:
            torch._foreach_add_(ps, xs, alpha=scales[0])
        else:
            torch._foreach_add_(ps, torch._foreach_mul(xs, list(scales)))
    elif ps[0].device.type != "cpu" and all(s is scales[0] for s in scales):
        torch._foreach_add_(ps, torch._foreach_mul(xs, scales[0]))
    else:
        torch._foreach_addcmul_(ps, xs, list(scales))


def axpy_(y: Tensor, x: Tensor, a: float | Tensor) -> Tensor:
    """y += a * x in place. ``a`` is a number on the eager per-tensor path (no temporary is made) or a 0-dim
    tensor when the kernel is compiled (a Python number would be baked into the graph and recompile)."""
    return y.addcmul_(x, a) if isinstance(a, Tensor) else y.add_(x, alpha=a)


def scale_(y: Tensor, s: float | Tensor) -> Tensor:
    """y *= s in place, skipped when s is the number 1."""
    return y.mul_(s) if isinstance(s, Tensor) or s != 1.0 else y


def adam_moments_foreach_(ms: list[Tensor], vs: list[Tensor], grads: list[Tensor], beta1: float,
                          beta2: float) -> None:
    """Adam's moments in place, multi-tensor: m <- beta1 m + (1 - beta1) g, v <- beta2 v + (1 - beta2) g^2."""
    torch._foreach_lerp_(ms, grads, 1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)


def evaluate_closure(closure: Callable[[], Any] | None) -> Any:
    """``step(closure)``: re-evaluate the loss with gradients enabled (step itself runs under no_grad)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def params_with_grad(group: dict, optimizer_name: str) -> list[Tensor]:
    """Parameters of a group that received a gradient this step; a sparse gradient is a clear error."""
    params = [p for p in group["params"] if p.grad is not None]
    if any(p.grad.is_sparse for p in params):
        raise RuntimeError(
            f"{optimizer_name} does not support sparse gradients; use a dense embedding "
            "(nn.Embedding(sparse=False)) or an optimizer built for sparse updates (torch.optim.SparseAdam)")
    return params


def group_by_device_and_dtype(tensorlists: Sequence[Sequence[Any]]) -> list[list[list[Any]]]:
    """Split parallel lists (params, grads, states...) into buckets of one (device, dtype) of the first list."""
    buckets: dict[tuple, list[list[Any]]] = {}
    for items in zip(*tensorlists):
        bucket = buckets.setdefault((items[0].device, items[0].dtype), [[] for _ in tensorlists])
        for column, item in zip(bucket, items):
            column.append(item)
    return list(buckets.values())


@dataclass
class Bucket:
    """Parameters of one group on one (device, dtype), updated together by one code path."""

    group: dict
    params: list[Tensor]  # as the model holds them
    work: list[Tensor]  # what the update writes: the parameters, or float32 copies of 16-bit ones
    grads: list[Tensor]  # the gradients in the working dtype (copies when ``owned``)
    states: list[dict]
    path: str

    @property
    def owned(self) -> bool:
        """The working tensors are this step's copies, not the parameters and their .grad."""
        return self.work is not self.params

    def write_back(self) -> None:
        if self.owned:
            torch._foreach_copy_(self.params, self.work)


def make_bucket(group: dict, params: list[Tensor], states: list[dict], path: str) -> Bucket:
    grads = [p.grad for p in params]
    if params[0].dtype in LOW_PRECISION:
        return Bucket(group, params, [p.float() for p in params], [g.float() for g in grads], states, path)
    return Bucket(group, params, params, grads, states, path)


class PaperOptimizer(torch.optim.Optimizer):
    """Base class (see the module docstring). Subclasses set ``has_fused`` and either the kernel trio
    (``init_state``, ``kernel``/``kernel_inputs``, ``multi_tensor_update``) or ``update``."""

    has_fused = False  # whether ``kernel`` may be compiled for the CPU
    sliceable = False  # whether ``kernel`` is elementwise, so the eager path may run it on cache-sized slices

    def __init__(self, params: Iterable, defaults: dict, foreach: bool | None = None,
                 fused: bool | None = None) -> None:
        check_paths(foreach, fused)
        super().__init__(params, {**defaults, "foreach": foreach, "fused": fused})
        self.expected_steps: int | None = None

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("expected_steps", None)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("fused", None)

    # ---------------------------------------------------------------- the trainer protocol's defaults
    def set_lr_factor(self, factor: float) -> None:
        """The lr schedule's multiplier for this epoch: lr = initial lr * factor (optimizers that learn their lr
        scale what they learned instead)."""
        protocol.scale_initial_lr(self, factor)

    def extras(self) -> dict[str, float | Tensor]:
        """Named scalars to log per step and as epoch means (none by default)."""
        return {}

    def plan(self, total_steps: int | None) -> None:
        """The run's expected number of steps: decides whether compiling the fused CPU path pays off."""
        self.expected_steps = None if total_steps is None else int(total_steps)

    def attach_gradient_delay(self, delay: Any) -> None:
        """Simulated asynchrony (optbench.staleness); only optimizers that measure it need to know."""

    # ---------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = evaluate_closure(closure)
        buckets = self.gather()
        if buckets:
            self.update(buckets)
            for bucket in buckets:
                bucket.write_back()
        return loss

    def gather(self) -> list[Bucket]:
        buckets = []
        for group in self.param_groups:
            params = params_with_grad(group, type(self).__name__)
            if not params:
                continue
            path = choose_path(params, group.get("foreach"), group.get("fused"), self.has_fused,
                               self.expected_steps)
            states = [self._state_of(p, group) for p in params]
            for bucket_params, bucket_states in group_by_device_and_dtype([params, states]):
                buckets.append(make_bucket(group, bucket_params, bucket_states, path))
        return buckets

    def _state_of(self, param: Tensor, group: dict) -> dict:
        state = self.state[param]
        if not state:
            state.update(self.init_state(param, group))
        return state

    def init_state(self, param: Tensor, group: dict) -> dict:
        """A parameter's state before its first step (use ``zeros_state``)."""
        return {}

    def update(self, buckets: list[Bucket]) -> None:
        """Default: every bucket on its own, through its path."""
        for b in buckets:
            if b.path == "foreach":
                self.multi_tensor_update(b.group, b.work, b.grads, b.states)
            else:
                tensors, per_tensor, shared, constants = self.kernel_inputs(b.group, b.states)
                self.run_kernel(type(self).kernel, b, [b.work, b.grads, *tensors], per_tensor, shared, constants)

    def run_kernel(self, kernel: Callable[..., Any], bucket: Bucket, tensors: list, per_tensor: dict,
                   shared: dict, constants: dict) -> Any:
        """A per-tensor kernel over the bucket: compiled once per group ('fused') or eagerly tensor by tensor
        ('single', on cache-sized slices when the class is ``sliceable``). Returns the sum of its results."""
        if bucket.path == "fused":
            return _fused.fused_loop(kernel, tensors[0])(tensors, per_tensor, shared, constants)
        run = for_slices if self.sliceable else _call
        return _fused.summed([run(kernel, [None if ts is None else ts[i] for ts in tensors],
                                  **{k: v[i] for k, v in per_tensor.items()}, **shared, **constants)
                              for i in range(len(tensors[0]))])

    def kernel_inputs(self, group: dict, states: list[dict]) -> tuple[list, dict, dict, dict]:
        """For ``kernel``: (state tensor lists after p and g, per-tensor values {name: [one per tensor]},
        shared values, constants). Advances step counters: called once per step and bucket."""
        raise NotImplementedError

    @staticmethod
    def kernel(p: Tensor, g: Tensor, *state: Any, **values: Any) -> None:
        """The update of one tensor, in place (the readable form, and what the CPU compiler fuses). Per-step
        values are numbers when it runs eagerly and 0-dim tensors when compiled: use ``axpy_``/``scale_``
        rather than ``alpha=`` for them, and never branch on them."""
        raise NotImplementedError

    def multi_tensor_update(self, group: dict, params: list, grads: list, states: list[dict]) -> None:
        """The same update with torch._foreach_* on one bucket (the GPU form)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- state
    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader, except that (1) the code path stays this optimizer's choice (a checkpoint written with
        fused=True on a CPU resumes on the multi-tensor path of a GPU: the state is the same on every path) and
        (2) 16-bit parameters keep float32 state."""
        paths = [(group["foreach"], group["fused"]) for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (foreach, fused) in zip(self.param_groups, paths):
            group["foreach"], group["fused"] = foreach, fused
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, param in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id)
            if saved is not None and state_dtype(param) != param.dtype:
                self.state[param] = {k: _to_state_precision(v, param) for k, v in saved.items()}


def _call(kernel: Callable[..., Any], args: Sequence, **values: Any) -> Any:
    return kernel(*args, **values)


def _to_state_precision(value: Any, param: Tensor) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.to(device=param.device, dtype=state_dtype(param))
    if isinstance(value, Tensor):
        return value.to(device=param.device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_state_precision(v, param) for v in value)
    return value
