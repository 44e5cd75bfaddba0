"""Expectigrad — Daley & Amato, "Expectigrad: Fast Stochastic Optimization with Robust Convergence
Properties" (arXiv 2010.01356).

REFERENCE.md sec. 2, per element, t counting this parameter's steps from 1:

    s = s + g^2                                   arithmetic (not exponential) mean of the squared gradients:
    n = n + [g != 0]   (sparse_counter)           n counts the steps that saw a nonzero gradient,
    n = t              (otherwise)                or all steps
    a = s / n          with 0/0 := 0
    u = g / (sqrt(a) + eps)
    beta > 0:  m = beta * m + (1 - beta) * u ;  p = p - lr / (1 - beta^t) * m      ("outer" momentum on u)
    beta = 0:  p = p - lr * u

Optional decoupled weight decay (not in the paper, default 0): p = p * (1 - lr * weight_decay) before the step.
a = s / max(n, 1) implements 0/0 := 0: n = 0 only where every gradient so far was 0, so s = 0 there too.

The update is written twice: per tensor (``expectigrad_tensor``: run eagerly, or compiled into one loop per
tensor by the fused CPU path) and multi-tensor (``expectigrad_multi_tensor``, the GPU form).
"""

from __future__ import annotations

from typing import Iterable

import torch

from optbench.optim._base import PaperOptimizer, add_scaled_, axpy_, zeros_state
from optbench.optim._checks import check_flag, check_positive, check_unit_interval


def expectigrad_tensor(p: torch.Tensor, g: torch.Tensor, s: torch.Tensor, n: torch.Tensor | None,
                       m: torch.Tensor | None, *, t: float, step_size: float, decay: float | None, beta: float,
                       eps: float) -> None:
    """One tensor's update (the per-tensor path, and what the fused CPU path compiles). n is None: the counter
    is t; m is None: beta = 0. step_size: lr / (1 - beta^t), or lr for beta = 0; decay: lr * weight_decay."""
    s.addcmul_(g, g)
    if n is not None:
        nonzero = torch.sign(g)
        n.addcmul_(nonzero, nonzero)  # sign(g)^2 = [g != 0], without a slow bool -> float add
        mean_sq = torch.div(s, n.clamp(min=1.0))
    else:
        mean_sq = torch.div(s, t)
    u = torch.div(g, mean_sq.sqrt_().add_(eps))
    if decay is not None:
        p.mul_(1.0 - decay)
    if m is not None:
        m.lerp_(u, 1.0 - beta)
        axpy_(p, m, -step_size)
    else:
        axpy_(p, u, -step_size)


def expectigrad_multi_tensor(ps: list[torch.Tensor], gs: list[torch.Tensor], states: list[dict], *, lr: float,
                             beta: float, eps: float, sparse_counter: bool, weight_decay: float) -> None:
    """Same math as ``expectigrad_tensor`` on lists of one device and dtype (step counters already advanced)."""
    ts = [state["step"] for state in states]
    ss = [state["sum"] for state in states]
    torch._foreach_addcmul_(ss, gs, gs)
    if sparse_counter:
        ns = [state["counter"] for state in states]
        nonzero = torch._foreach_sign(gs)
        torch._foreach_addcmul_(ns, nonzero, nonzero)  # sign(g)^2 = [g != 0]
        us = torch._foreach_div(ss, torch._foreach_clamp_min(ns, 1.0))
    else:
        us = torch._foreach_div(ss, [float(t) for t in ts])
    torch._foreach_sqrt_(us)
    torch._foreach_add_(us, eps)
    us = torch._foreach_div(gs, us)
    if weight_decay != 0:
        torch._foreach_mul_(ps, 1.0 - lr * weight_decay)
    if beta > 0:
        ms = [state["momentum"] for state in states]
        torch._foreach_lerp_(ms, us, 1.0 - beta)
        add_scaled_(ps, ms, [-lr / (1.0 - beta**t) for t in ts])
    else:
        torch._foreach_add_(ps, us, alpha=-lr)


class Expectigrad(PaperOptimizer):
    """Adaptive steps from the arithmetic mean of squared gradients, with momentum applied after adaptation.

    Args: lr (> 0), beta (outer momentum in [0, 1); 0 disables it), eps (> 0), sparse_counter (count only
    nonzero gradients, for sparse features), weight_decay (decoupled, >= 0; not in the paper), foreach, fused
    (None, None: multi-tensor off the CPU; on it the fused kernel for groups of >= 1M elements, else per-tensor).
    Its first step moves each coordinate by about lr * sign(g); unlike Adam it converges on Reddi et al.'s
    counterexample.
    """

    has_fused = sliceable = True

    def __init__(self, params: Iterable, lr: float = 1e-3, beta: float = 0.9, eps: float = 1e-8,
                 sparse_counter: bool = True, weight_decay: float = 0.0, foreach: bool | None = None,
                 fused: bool | None = None) -> None:
        check_positive("lr", lr)
        check_unit_interval("beta", beta)
        check_positive("eps", eps)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        check_flag("sparse_counter", sparse_counter)
        defaults = dict(lr=lr, beta=beta, eps=eps, sparse_counter=sparse_counter, weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, fused=fused)

    def init_state(self, param: torch.Tensor, group: dict) -> dict:
        state = {"step": 0, "sum": zeros_state(param)}
        if group["sparse_counter"]:
            state["counter"] = zeros_state(param)
        if group["beta"] > 0:
            state["momentum"] = zeros_state(param)
        return state

    def _advance(self, group: dict, states: list[dict]) -> None:
        """Count this step; add the momentum buffer if beta became > 0 after the first step."""
        for state in states:
            if group["sparse_counter"] and "counter" not in state:
                raise ValueError("sparse_counter cannot be switched on after the first step (no count to resume)")
            if group["beta"] > 0 and "momentum" not in state:
                state["momentum"] = torch.zeros_like(state["sum"])
            state["step"] += 1

    kernel = staticmethod(expectigrad_tensor)

    def kernel_inputs(self, group, states):
        self._advance(group, states)
        lr, beta, wd = group["lr"], group["beta"], group["weight_decay"]
        tensors = [[s["sum"] for s in states], [s["counter"] for s in states] if group["sparse_counter"] else None,
                   [s["momentum"] for s in states] if beta > 0 else None]
        per_tensor = {"t": [float(s["step"]) for s in states],
                      "step_size": [lr / (1.0 - beta ** s["step"]) if beta > 0 else lr for s in states]}
        return tensors, per_tensor, {"decay": lr * wd if wd != 0 else None}, {"beta": beta, "eps": group["eps"]}

    def multi_tensor_update(self, group, params, grads, states) -> None:
        self._advance(group, states)
        expectigrad_multi_tensor(params, grads, states, lr=group["lr"], beta=group["beta"], eps=group["eps"],
                                 sparse_counter=group["sparse_counter"], weight_decay=group["weight_decay"])
