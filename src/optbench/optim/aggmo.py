"""AggMo — Lucas, Sun, Zemel, Grosse, "Aggregated Momentum: Stability Through Passive Damping" (ICLR 2019).

REFERENCE.md sec. 1, with d the gradient plus coupled L2 decay and K = len(betas):

    d = g + weight_decay * p
    buf_i = beta_i * buf_i + d                  for i = 0..K-1 (buffers start at zero)
    p = p - (lr / K) * sum_i buf_i

Storage: each velocity is kept as its exponential moving average m_i = (1 - beta_i) * buf_i, which obeys
m_i = lerp(m_i, d, 1 - beta_i) (one fused pass instead of a multiply and an add) and gives back
buf_i = m_i / (1 - beta_i). A beta of 0 has buf = d, so it needs no buffer at all.

The update is written twice: per tensor (``aggmo_tensor``: run eagerly, or compiled into one loop per tensor by
the fused CPU path) and multi-tensor (``aggmo_multi_tensor``, the GPU form).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from optbench.optim._base import PaperOptimizer, axpy_, zeros_state
from optbench.optim._checks import check_betas, check_positive


def _damped_betas(betas: Sequence[float]) -> list[float]:
    """The betas that own a buffer (beta = 0 reuses d itself)."""
    return [b for b in betas if b != 0.0]


def _check_buffers(buffers: list, betas: Sequence[float]) -> None:
    if len(buffers) != len(_damped_betas(betas)):
        raise ValueError(
            f"AggMo state holds {len(buffers)} velocity buffers but betas={tuple(betas)} needs "
            f"{len(_damped_betas(betas))}; betas cannot change length after the first step"
        )


def _buffers_of(states: list[dict], betas: Sequence[float]) -> list[list[torch.Tensor]]:
    """Each parameter's velocity buffers (``buffers[j][i]``: parameter j, damped beta i), checked against betas."""
    buffers = [s["momentum_buffers"] for s in states]
    for b in buffers:
        _check_buffers(b, betas)
    return buffers


def aggmo_tensor(p: torch.Tensor, g: torch.Tensor, buffers: Sequence[torch.Tensor], *, lr: float | torch.Tensor,
                 betas: tuple[float, ...], weight_decay: float) -> None:
    """One tensor's update (the per-tensor path, and what the fused CPU path compiles)."""
    k = len(betas)
    d = torch.add(g, p, alpha=weight_decay) if weight_decay != 0 else g
    if len(buffers) < k:  # one beta is 0: its velocity is d
        axpy_(p, d, -lr / k)
    for beta, m in zip(_damped_betas(betas), buffers):
        m.lerp_(d, 1.0 - beta)
        axpy_(p, m, -lr / (k * (1.0 - beta)))


def aggmo_multi_tensor(ps: list[torch.Tensor], gs: list[torch.Tensor], buffers: list[list[torch.Tensor]], *,
                       lr: float, betas: Sequence[float], weight_decay: float) -> None:
    """Same math as ``aggmo_tensor``; ``buffers[j][i]`` is parameter j's buffer for damped beta i."""
    k = len(betas)
    ds = torch._foreach_add(gs, ps, alpha=weight_decay) if weight_decay != 0 else gs
    if len(buffers[0]) < k:
        torch._foreach_add_(ps, ds, alpha=-lr / k)
    for i, beta in enumerate(_damped_betas(betas)):
        ms = [bufs[i] for bufs in buffers]
        torch._foreach_lerp_(ms, ds, 1.0 - beta)
        torch._foreach_add_(ps, ms, alpha=-lr / (k * (1.0 - beta)))


class AggMo(PaperOptimizer):
    """Aggregated momentum: K heavy-ball velocities with different damping, averaged.

    Args: lr (> 0, required), betas (distinct values in [0, 1)), weight_decay (coupled L2, >= 0),
    foreach, fused (None, None: multi-tensor off the CPU; on it the fused kernel for groups of >= 1M elements,
    else per-tensor).
    Large betas (0.999) stay stable because the low-beta velocities damp the oscillations of the high ones.
    """

    has_fused = sliceable = True

    def __init__(self, params: Iterable, lr: float, betas: Sequence[float] = (0.0, 0.9, 0.99),
                 weight_decay: float = 0.0, foreach: bool | None = None, fused: bool | None = None) -> None:
        check_positive("lr", lr)
        check_betas("betas", betas, distinct=True)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        defaults = dict(lr=lr, betas=tuple(float(b) for b in betas), weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, fused=fused)

    @classmethod
    def from_exp_form(cls, params: Iterable, lr: float, a: float = 0.1, k: int = 3, weight_decay: float = 0.0,
                      foreach: bool | None = None, fused: bool | None = None) -> "AggMo":
        """The paper's exponential form: betas_i = 1 - a**i for i = 0..k-1 (a=0.1, k=3 -> 0, 0.9, 0.99)."""
        if not (math.isfinite(a) and 0.0 < a < 1.0):
            raise ValueError(f"a must be in (0, 1) (betas are 1 - a**i), got {a!r}")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k (the number of betas) must be an integer >= 1, got {k!r}")
        betas = tuple(1.0 - a**i for i in range(int(k)))
        return cls(params, lr, betas=betas, weight_decay=weight_decay, foreach=foreach, fused=fused)

    def init_state(self, param: torch.Tensor, group: dict) -> dict:
        return {"momentum_buffers": [zeros_state(param) for _ in _damped_betas(group["betas"])]}

    kernel = staticmethod(aggmo_tensor)

    def kernel_inputs(self, group, states):
        constants = dict(betas=group["betas"], weight_decay=group["weight_decay"])
        return [_buffers_of(states, group["betas"])], {}, {"lr": group["lr"]}, constants

    def multi_tensor_update(self, group, params, grads, states) -> None:
        aggmo_multi_tensor(params, grads, _buffers_of(states, group["betas"]), lr=group["lr"], betas=group["betas"],
                           weight_decay=group["weight_decay"])
