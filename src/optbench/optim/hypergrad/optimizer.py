"""Hypergrad: any model optimizer (directions.py) composed with any learning-rate optimizer (lr_optimizers.py)
through the hypergradient of REFERENCE.md sec. 3 (Baydin et al., ICLR 2018, and the "variants" report).

One step t, in the paper's order:
    g_t   = grad + weight_decay * p                                  (coupled weight decay, before everything)
    h_t   = -sum over ALL parameters of all groups of g_t . d_{t-1}  (one dot product; h_1 = 0)
    alpha_t = lop(alpha_{t-1}, h_t)                                   (alpha is updated before it is used)
    p_t   = p_{t-1} - alpha_t * d_t                                   (d_t from the model optimizer)

Why alpha is a 0-dim tensor: h is a reduction on the device; turning it into a Python float would stall the
host once per step on CUDA. So alpha stays on the parameters' device (float64, like the reference's Python
float) and is stored in every ``param_groups[i]['lr']`` (one shared tensor; the trainer calls float() only when
it logs). On the CPU this costs nothing: the update is one broadcasting addcmul per tensor, exactly the memory
traffic of ``p.add_(d, alpha=-lr)``. Parameters on several devices: alpha lives on the device of the first
parameter; each other device's partial dot product is copied there, and alpha is copied back to each device
for its update (device-to-device copies, no host sync).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from optbench.optim._base import Bucket, PaperOptimizer
from optbench.optim._checks import check_betas, check_positive, check_unit_interval
from optbench.optim.hypergrad._tensors import alpha_dtype, dot
from optbench.optim.hypergrad.directions import MODEL_OPTIMIZERS, Direction
from optbench.optim.hypergrad.lr_optimizers import LR_OPTIMIZERS, build_lr_optimizer

Tensor = torch.Tensor


class Hypergrad(PaperOptimizer):
    """Hypergradient descent with a choice of model optimizer and learning-rate optimizer.

    model_opt: 'sgd' (d = g), 'sgdn' (Nesterov, PyTorch convention; momentum, dampening), 'adam' (betas, eps;
        the reference's eps placement), or 'sgdm' (classical momentum, used by SGDHD).
    lr_opt: 'sgd' (alpha -= hypergrad_lr * h: the paper's X-HD), 'sgdn' (lr_momentum), 'adam' (lr_betas, lr_eps).
    lr: alpha_0, >= 0 (the paper's point is that alpha_0 = 0 works). alpha may become negative, as in the
        reference; lr_min (default None) clamps it from below.
    per_tensor: compatibility mode that reproduces the reference Adam-HD, which updates alpha once per
        parameter tensor inside its loop (later tensors see a different alpha). Only for model_opt='adam',
        lr_opt='sgd'; always runs the per-tensor loop. With several groups the reference keeps one alpha per
        group; here alpha stays shared.
    foreach: True runs the multi-tensor path (torch._foreach_* per (device, dtype)), False the per-tensor path
        (same operations one tensor at a time, writing into last step's buffers: no allocations). None picks
        the faster: per-tensor for parameters on the CPU, multi-tensor elsewhere.

    A configured lr schedule scales the learned alpha (``set_lr_factor``); ``extras()`` reports the last h.
    The per-group keys are lr (shared, do not set per group), weight_decay and the model optimizer's own.
    """

    def __init__(self, params, lr: float, hypergrad_lr: float, model_opt: str = "sgd", lr_opt: str = "sgd",
                 momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, lr_momentum: float = 0.9, lr_betas: tuple[float, float] = (0.9, 0.999),
                 lr_eps: float = 1e-8, lr_min: float | None = None, dampening: float = 0.0, per_tensor: bool = False,
                 foreach: bool | None = None):
        lr = float(lr)
        _check_arguments(lr, hypergrad_lr, model_opt, lr_opt, lr_momentum, lr_betas, lr_eps, lr_min, per_tensor)
        if per_tensor and foreach:
            raise ValueError("per_tensor=True runs the reference's per-tensor loop; it cannot take foreach=True")
        self.direction: Direction = MODEL_OPTIMIZERS[model_opt]()
        self.lr_optimizer = build_lr_optimizer(lr_opt, lr_momentum, tuple(lr_betas), lr_eps)
        self.model_opt, self.lr_opt = model_opt, lr_opt
        self.hypergrad_lr, self.lr_min = float(hypergrad_lr), None if lr_min is None else float(lr_min)
        self.per_tensor = bool(per_tensor)
        own = {"momentum": momentum, "dampening": dampening, "betas": tuple(betas), "eps": eps}
        defaults = {"lr": lr, "weight_decay": weight_decay}
        defaults.update({key: own[key] for key in self.direction.hyperparameters})
        self._initial_lr = lr
        super().__init__(params, defaults, foreach=False if per_tensor else foreach)
        alpha = self._alpha()
        self._set_alpha(alpha)
        self._h = torch.zeros_like(alpha)  # last hypergradient (h_1 = 0)
        self._lr_state = self.lr_optimizer.init_state(alpha)
        self._lr_factor = 1.0

    # ------------------------------------------------------------------ groups and alpha
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        own_lr = param_group.get("lr")
        if own_lr is not None and not isinstance(own_lr, Tensor) and float(own_lr) != self._initial_lr:
            raise ValueError("Hypergrad learns one learning rate shared by all parameter groups; set lr in the "
                             f"constructor, not per group (got lr={param_group['lr']!r} in a group)")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_positive("weight_decay", group["weight_decay"], allow_zero=True)
        self.direction.check(group)
        if hasattr(self, "_h"):  # added after construction: share the current alpha
            self._set_alpha(self._alpha())

    def _alpha(self) -> Tensor:
        """The shared alpha as a 0-dim tensor on the first parameter's device (group 0 is authoritative: a
        user or a torch scheduler may have written a float there)."""
        device = self.param_groups[0]["params"][0].device
        lr, dtype = self.param_groups[0]["lr"], alpha_dtype(device)
        if isinstance(lr, Tensor) and lr.dim() == 0 and lr.dtype == dtype and lr.device == device:
            return lr
        return torch.as_tensor(lr, dtype=dtype, device=device).reshape(())

    def _set_alpha(self, alpha: Tensor) -> None:
        for group in self.param_groups:
            group["lr"] = alpha

    def _clamp(self, alpha: Tensor) -> Tensor:
        return alpha if self.lr_min is None else alpha.clamp(min=self.lr_min)

    # ------------------------------------------------------------------ trainer protocol
    def set_lr_factor(self, factor: float) -> None:
        """Scale the learned alpha by factor / previous factor, so a step decay multiplies it instead of
        overwriting it with lr * factor."""
        factor = float(factor)
        check_positive("lr schedule factor", factor)
        if factor != self._lr_factor:
            self._set_alpha(self._alpha() * (factor / self._lr_factor))
            self._lr_factor = factor

    def extras(self) -> dict[str, Tensor]:
        """The last hypergradient h_t = -g_t . d_{t-1} (0 before the second step)."""
        return {"hypergrad": self._h}

    # ------------------------------------------------------------------ step
    def update(self, buckets: list[Bucket]) -> None:
        """One global hypergradient over all buckets, then the lr optimizer's step, then the model's."""
        work = [_with_weight_decay(b) for b in buckets]
        alpha = self._alpha()
        if self.per_tensor:
            alpha, h = self._step_sequential(work, alpha)
        else:
            h = self._hypergradient(work, alpha)
            alpha = self._clamp(self.lr_optimizer.update(alpha, h, self.hypergrad_lr, self._lr_state))
            self._apply(work, alpha)
        self._set_alpha(alpha)
        self._h = h

    def _hypergradient(self, work: list[tuple[Bucket, list[Tensor], bool]], alpha: Tensor) -> Tensor:
        """h_t = -sum_i g_i . d_i over every parameter that has a previous direction: per-tensor dot products
        on the device, summed per (device, dtype, factor) in parameter order, then in alpha's dtype."""
        dots: dict[tuple, list[Tensor]] = {}
        for b, grads, _ in work:
            for g, state in zip(grads, b.states):
                previous = self.direction.previous(state, b.group)
                if previous is not None:
                    d, factor = previous
                    dots.setdefault((g.device, g.dtype, factor), []).append(dot(g, d))
        if not dots:
            return torch.zeros_like(alpha)
        partial = [torch.stack(ds).sum().to(alpha) * factor for (_, _, factor), ds in dots.items()]
        return -(partial[0] if len(partial) == 1 else torch.stack(partial).sum())

    def _apply(self, work: list[tuple[Bucket, list[Tensor], bool]], alpha: Tensor) -> None:
        """p -= alpha_t d_t for every bucket, with -alpha_t made once per (device, working dtype)."""
        scales: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        for b, grads, owned in work:
            key = (b.work[0].device, b.work[0].dtype)
            if key not in scales:
                scales[key] = (-alpha).to(*key)
            self._step_bucket(b, grads, owned, scales[key])

    def _step_bucket(self, b: Bucket, grads: list[Tensor], owned: bool, scale: Tensor) -> None:
        if b.path == "foreach":
            self.direction.step_multi(b.group, b.work, grads, b.states, scale, owned)
        else:
            for p, g, state in zip(b.work, grads, b.states):
                self.direction.step_single(b.group, p, g, state, scale, owned)

    def _step_sequential(self, work: list[tuple[Bucket, list[Tensor], bool]], alpha: Tensor) -> tuple[Tensor, Tensor]:
        """per_tensor=True: the reference Adam-HD's loop; alpha takes one SGD step per tensor with that
        tensor's share of h, then updates that tensor. Returns alpha and the total h."""
        h_total = torch.zeros_like(alpha)
        for b, grads, owned in work:
            for p, g, state in zip(b.work, grads, b.states):
                previous = self.direction.previous(state, b.group)
                if previous is not None:
                    d, factor = previous
                    h = -(dot(g, d).to(alpha) * factor)
                    alpha = self._clamp(self.lr_optimizer.update(alpha, h, self.hypergrad_lr, self._lr_state))
                    h_total = h_total + h
                self.direction.step_single(b.group, p, g, state, (-alpha).to(p.device, p.dtype), owned)
        return alpha, h_total

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["hypergrad"] = {"lr_factor": self._lr_factor, "h": self._h, "lr_state": dict(self._lr_state)}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("hypergrad", None)
        super().load_state_dict(state_dict)
        alpha = self._alpha()
        self._set_alpha(alpha)
        if extra is not None:
            self._lr_factor = float(extra["lr_factor"])
            self._h = torch.as_tensor(extra["h"]).to(alpha)
            self._lr_state = {k: v.to(alpha) if isinstance(v, Tensor) else v for k, v in extra["lr_state"].items()}


def _with_weight_decay(b: Bucket) -> tuple[Bucket, list[Tensor], bool]:
    """(bucket, g = grad + wd * p in the working dtype, whether g is this step's temporary)."""
    wd = b.group["weight_decay"]
    if wd == 0:
        return b, b.grads, b.owned
    return b, torch._foreach_add(b.grads, b.work, alpha=wd), True


def _check_arguments(lr, hypergrad_lr, model_opt, lr_opt, lr_momentum, lr_betas, lr_eps, lr_min, per_tensor) -> None:
    check_positive("lr", lr, allow_zero=True)
    check_positive("hypergrad_lr", hypergrad_lr, allow_zero=True)
    if model_opt not in MODEL_OPTIMIZERS:
        raise ValueError(f"model_opt must be one of {', '.join(map(repr, MODEL_OPTIMIZERS))}, got {model_opt!r}")
    if lr_opt not in LR_OPTIMIZERS:
        raise ValueError(f"lr_opt must be one of {', '.join(map(repr, LR_OPTIMIZERS))}, got {lr_opt!r}")
    check_unit_interval("lr_momentum", lr_momentum)
    check_betas("lr_betas", lr_betas, length=2)
    check_positive("lr_eps", lr_eps)
    if lr_min is not None and not (math.isfinite(float(lr_min)) and float(lr_min) <= lr):
        raise ValueError(f"lr_min must be a finite number <= lr (= {lr!r}) or None, got {lr_min!r}")
    if per_tensor and (model_opt, lr_opt) != ("adam", "sgd"):
        raise ValueError("per_tensor=True reproduces the reference Adam-HD only: it needs model_opt='adam' "
                         f"and lr_opt='sgd', got model_opt={model_opt!r}, lr_opt={lr_opt!r}")
