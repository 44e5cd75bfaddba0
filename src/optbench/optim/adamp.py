"""AdamP and SGDP — Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant
Weights" (ICLR 2021).

REFERENCE.md sec. 4. For a weight that is scale-invariant (e.g. a conv followed by batch norm), the gradient is
orthogonal to the weight, and momentum's radial component only inflates the weight norm, which shrinks the
effective step size. Both optimizers remove that radial component from their update, for parameters with
p.dim() > 1 whose gradient the cosine test finds (nearly) orthogonal to the weight:

    views: channel (one row per output channel: p.view(p.size(0), -1)), then layer (one row: the whole tensor)
    the first view with max_rows |cos(g_row, p_row)| < delta / sqrt(row length) is scale-invariant; then
        p_n = p_row / (||p_row|| + eps);  update_row -= p_n * (p_n . update_row);  ratio = wd_ratio
    otherwise the update is untouched and ratio = 1.

AdamP:  m, v as Adam;  update = m / (sqrt(v) / sqrt(1 - b2^t) + eps)  (nesterov: (b1 m + (1 - b1) g) in place of m)
        project;  p = p * (1 - lr * weight_decay * ratio);  p = p - lr / (1 - b1^t) * update
SGDP:   buf = momentum * buf + (1 - dampening) * g;  d = g + momentum * buf (nesterov) or d = buf
        project d (without nesterov d is buf, so the stored buffer is projected too);
        p = p * (1 - lr * weight_decay * ratio / (1 - momentum));  p = p - lr * d

Implementation: the projection is returned as a per-row coefficient c (update_proj = update - c * p), so the
radial removal and the weight decay fold into one per-row scale of p:
    p - lr_eff * (update - c * p) with decay  ==  p * (1 - decay * ratio + lr_eff * c) - lr_eff * update.
The decision between views is made on the device with ``torch.where`` (no host synchronisation).

Each update is written twice: per tensor (``adamp_tensor``, ``sgdp_tensor``: run eagerly, or compiled into one
loop per tensor by the fused CPU path, which also fuses the projection's row sums into that loop) and
multi-tensor (``adamp_multi_tensor``, ``sgdp_multi_tensor``, the GPU form).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from optbench.optim._base import PaperOptimizer, adam_moments_foreach_, add_scaled_, axpy_, scale_, zeros_state
from optbench.optim._checks import check_betas, check_positive, check_unit_interval

Tensor = torch.Tensor


def radial_projection(p: Tensor, g: Tensor, update: Tensor, *, delta: float, eps: float,
                      wd_ratio: float) -> tuple[Tensor, Tensor]:
    """(c, ratio) for one tensor with p.dim() > 1: the projected update is ``update - c * p`` (c has one value
    per output channel, shaped to broadcast against p) and ratio multiplies the weight decay."""
    rows, g_rows = p.reshape(p.shape[0], -1), g.reshape(p.shape[0], -1)
    gp, pu = (g_rows * rows).sum(1), (update.reshape(rows.shape) * rows).sum(1)
    p_norm, g_norm = torch.linalg.vector_norm(rows, dim=1), torch.linalg.vector_norm(g_rows, dim=1)
    p_sq, g_sq = p_norm.square(), g_norm.square()

    # cosine as torch.nn.functional.cosine_similarity defines it: x.y / (max(|x|, eps) * max(|y|, eps))
    cos_channel = gp.abs() / (p_norm.clamp(min=eps) * g_norm.clamp(min=eps))
    channel = cos_channel.max() < delta / math.sqrt(rows.shape[1])
    p_norm_layer, g_norm_layer = p_sq.sum().sqrt(), g_sq.sum().sqrt()
    cos_layer = gp.sum().abs() / (p_norm_layer.clamp(min=eps) * g_norm_layer.clamp(min=eps))
    layer = cos_layer < delta / math.sqrt(p.numel())

    # p_n (p_n . u) = p * (p . u) / (||p|| + eps)^2, per row (channel view) or for the whole tensor (layer view)
    c_channel = pu / (p_norm + eps).square()
    c_layer = pu.sum() / (p_norm_layer + eps).square()
    c = torch.where(channel, c_channel, torch.where(layer, c_layer, torch.zeros_like(c_layer)))
    ratio = 1.0 + (wd_ratio - 1.0) * (channel | layer).to(p.dtype)
    return c.view((-1,) + (1,) * (p.dim() - 1)), ratio


# ---------------------------------------------------------------------------------------------------- AdamP


def adam_step_constants(beta1: float, beta2: float, eps: float, t: int) -> tuple[float, float]:
    """With update' = m / (sqrt(v) + eps * sqrt(1 - b2^t)), the paper's lr / (1 - b1^t) * update equals
    lr_eff * update' for lr_eff = lr * sqrt(1 - b2^t) / (1 - b1^t): the bias correction leaves the big tensors.
    Returns (eps', lr_eff / lr)."""
    bc2_sqrt = math.sqrt(1.0 - beta2**t)
    return eps * bc2_sqrt, bc2_sqrt / (1.0 - beta1**t)


def adamp_tensor(p: Tensor, g: Tensor, m: Tensor, v: Tensor, *, lr_eff: float, eps_t: float, decay: float,
                 beta1: float, beta2: float, eps: float, nesterov: bool, delta: float, wd_ratio: float) -> None:
    """One tensor's update (the per-tensor path, and what the fused CPU path compiles); lr_eff and eps_t from
    ``adam_step_constants``, decay = lr * weight_decay."""
    m.lerp_(g, 1.0 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    numerator = torch.lerp(m, g, 1.0 - beta1) if nesterov else m
    update = torch.div(numerator, v.sqrt().add_(eps_t))
    if p.dim() > 1:
        c, ratio = radial_projection(p, g, update, delta=delta, eps=eps, wd_ratio=wd_ratio)
        p.mul_((1.0 - decay * ratio) + lr_eff * c)
    else:
        scale_(p, 1.0 - decay)
    axpy_(p, update, -lr_eff)


def adamp_multi_tensor(ps: list, gs: list, states: list[dict], group: dict, lr_effs: list[float],
                       eps_ts: list[float]) -> None:
    """Same math as ``adamp_tensor`` on one bucket; the projection stays per tensor (row reductions)."""
    beta1, beta2 = group["betas"]
    ms = [s["exp_avg"] for s in states]
    vs = [s["exp_avg_sq"] for s in states]
    adam_moments_foreach_(ms, vs, gs, beta1, beta2)
    updates = torch._foreach_sqrt(vs)
    torch._foreach_add_(updates, eps_ts)
    numerators = torch._foreach_lerp(ms, gs, 1.0 - beta1) if group["nesterov"] else ms
    updates = torch._foreach_div(numerators, updates)
    decay = group["lr"] * group["weight_decay"]
    scales = [_decay_and_project(p, g, u, lr_eff=lr_eff, decay=decay, group=group)
              for p, g, u, lr_eff in zip(ps, gs, updates, lr_effs)]
    _scaled_steps(ps, updates, scales, lr_effs)


def _decay_and_project(p: Tensor, g: Tensor, update: Tensor, *, lr_eff: float, decay: float, group: dict,
                       fold: bool = True) -> Tensor | float:
    """The multiplier of p for the step ``p = p * scale - lr_eff * update``.

    fold=True: the radial removal is folded into scale (``update`` is left as is).
    fold=False: ``update`` is projected in place (SGDP's stored buffer) and scale is the decay alone.
    Returns a per-row tensor for p.dim() > 1, else a float."""
    if p.dim() <= 1:
        return 1.0 - decay
    c, ratio = radial_projection(p, g, update, delta=group["delta"], eps=group["eps"], wd_ratio=group["wd_ratio"])
    if fold:
        return (1.0 - decay * ratio) + lr_eff * c
    update.addcmul_(p, c, value=-1.0)
    return 1.0 - decay * ratio


def _scaled_steps(ps: list, updates: list, scales: list, lr_effs: list[float]) -> None:
    """p = p * scale - lr_eff * update for each tensor (scales: per-row tensors or floats)."""
    tensor_scaled = [i for i, s in enumerate(scales) if isinstance(s, Tensor)]
    float_scaled = [i for i, s in enumerate(scales) if not isinstance(s, Tensor) and s != 1.0]
    for chosen in (tensor_scaled, float_scaled):
        if chosen:
            torch._foreach_mul_([ps[i] for i in chosen], [scales[i] for i in chosen])
    add_scaled_(ps, updates, [-x for x in lr_effs])


class AdamP(PaperOptimizer):
    """Adam with the radial component of the update removed on scale-invariant weights, and decoupled weight
    decay reduced by wd_ratio on them.

    Args: lr (> 0), betas (two values in [0, 1)), eps (> 0), weight_decay (decoupled, >= 0),
    delta (cosine threshold, > 0), wd_ratio (weight-decay multiplier on scale-invariant weights, in [0, 1]),
    nesterov, foreach, fused (None, None: multi-tensor off the CPU; on it the fused kernel where compiling pays
    off, else per-tensor). The paper's recommendation: lr 1e-3, weight_decay 1e-2.
    """

    has_fused = True

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, delta: float = 0.1, wd_ratio: float = 0.1,
                 nesterov: bool = False, foreach: bool | None = None, fused: bool | None = None) -> None:
        check_positive("lr", lr)
        check_betas("betas", betas, length=2)
        check_positive("eps", eps)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        _check_projection_args(delta, wd_ratio)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, delta=delta,
                        wd_ratio=wd_ratio, nesterov=bool(nesterov))
        super().__init__(params, defaults, foreach=foreach, fused=fused)

    def init_state(self, param: Tensor, group: dict) -> dict:
        return {"step": 0, "exp_avg": zeros_state(param), "exp_avg_sq": zeros_state(param)}

    def _advance(self, group: dict, states: list[dict]) -> tuple[list[float], list[float]]:
        """Count one more step for each parameter; their (lr_eff, eps_t) of ``adam_step_constants``."""
        beta1, beta2 = group["betas"]
        lr_effs, eps_ts = [], []
        for state in states:
            state["step"] += 1
            eps_t, lr_factor = adam_step_constants(beta1, beta2, group["eps"], state["step"])
            lr_effs.append(group["lr"] * lr_factor)
            eps_ts.append(eps_t)
        return lr_effs, eps_ts

    kernel = staticmethod(adamp_tensor)

    def kernel_inputs(self, group, states):
        lr_effs, eps_ts = self._advance(group, states)
        beta1, beta2 = group["betas"]
        constants = dict(beta1=beta1, beta2=beta2, eps=group["eps"], nesterov=group["nesterov"],
                         delta=group["delta"], wd_ratio=group["wd_ratio"])
        tensors = [[s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]]
        return tensors, {"lr_eff": lr_effs, "eps_t": eps_ts}, {"decay": group["lr"] * group["weight_decay"]}, constants

    def multi_tensor_update(self, group, params, grads, states) -> None:
        adamp_multi_tensor(params, grads, states, group, *self._advance(group, states))


# ----------------------------------------------------------------------------------------------------- SGDP


def sgdp_tensor(p: Tensor, g: Tensor, buf: Tensor, *, lr: float, decay: float, momentum: float, dampening: float,
                nesterov: bool, delta: float, eps: float, wd_ratio: float) -> None:
    """One tensor's update (the per-tensor path, and what the fused CPU path compiles);
    decay = lr * weight_decay / (1 - momentum). The buffer is written last, so the compiled loop reads it once."""
    buf_new = torch.add(g, buf, alpha=momentum) if dampening == 0 else buf * momentum + g * (1.0 - dampening)
    d = torch.add(g, buf_new, alpha=momentum) if nesterov else buf_new
    if p.dim() > 1:
        c, ratio = radial_projection(p, g, d, delta=delta, eps=eps, wd_ratio=wd_ratio)
        if nesterov:
            p.mul_((1.0 - decay * ratio) + lr * c)
        else:  # d is the new buffer: it is stored projected
            d.addcmul_(p, c, value=-1.0)
            p.mul_(1.0 - decay * ratio)
    else:
        scale_(p, 1.0 - decay)
    buf.copy_(buf_new)
    axpy_(p, d, -lr)


def sgdp_multi_tensor(ps: list, gs: list, states: list[dict], group: dict) -> None:
    """Same math as ``sgdp_tensor`` on one bucket."""
    momentum, dampening, lr = group["momentum"], group["dampening"], group["lr"]
    bufs = [s["momentum_buffer"] for s in states]
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, gs, alpha=1.0 - dampening)
    nesterov = group["nesterov"]
    ds = torch._foreach_add(gs, bufs, alpha=momentum) if nesterov else bufs
    decay = lr * group["weight_decay"] / (1.0 - momentum)
    scales = [_decay_and_project(p, g, d, lr_eff=lr, decay=decay, group=group, fold=nesterov)
              for p, g, d in zip(ps, gs, ds)]
    _scaled_steps(ps, ds, scales, [lr] * len(ps))


class SGDP(PaperOptimizer):
    """SGD (momentum, dampening, Nesterov as torch.optim.SGD) with the radial component removed on
    scale-invariant weights and decoupled weight decay lr * weight_decay * ratio / (1 - momentum).

    Args: lr (> 0, required), momentum in [0, 1), dampening in [0, 1], weight_decay (>= 0), nesterov (needs
    momentum > 0 and dampening 0), eps (> 0), delta (> 0), wd_ratio (in [0, 1]), foreach, fused (None, None:
    multi-tensor off the CPU; on it the fused kernel where compiling pays off, else per-tensor).
    The paper's recommendation: lr 0.1, momentum 0.9, nesterov, weight_decay 1e-5.
    """

    has_fused = True

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, eps: float = 1e-8, delta: float = 0.1,
                 wd_ratio: float = 0.1, foreach: bool | None = None, fused: bool | None = None) -> None:
        check_positive("lr", lr)
        check_unit_interval("momentum", momentum)
        check_unit_interval("dampening", dampening, closed=True)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"nesterov=True needs momentum > 0 and dampening = 0, got momentum={momentum!r}, "
                             f"dampening={dampening!r}")
        check_positive("eps", eps)
        _check_projection_args(delta, wd_ratio)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=bool(nesterov), eps=eps, delta=delta, wd_ratio=wd_ratio)
        super().__init__(params, defaults, foreach=foreach, fused=fused)

    def init_state(self, param: Tensor, group: dict) -> dict:
        return {"momentum_buffer": zeros_state(param)}

    kernel = staticmethod(sgdp_tensor)

    def kernel_inputs(self, group, states):
        lr, momentum = group["lr"], group["momentum"]
        constants = dict(momentum=momentum, dampening=group["dampening"], nesterov=group["nesterov"],
                         delta=group["delta"], eps=group["eps"], wd_ratio=group["wd_ratio"])
        shared = {"lr": lr, "decay": lr * group["weight_decay"] / (1.0 - momentum)}
        return [[s["momentum_buffer"] for s in states]], {}, shared, constants

    def multi_tensor_update(self, group, params, grads, states) -> None:
        sgdp_multi_tensor(params, grads, states, group)


def _check_projection_args(delta: float, wd_ratio: float) -> None:
    check_positive("delta", delta)
    check_unit_interval("wd_ratio", wd_ratio, closed=True)
