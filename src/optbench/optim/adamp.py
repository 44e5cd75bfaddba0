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
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from optbench.optim import _base, _fused
from optbench.optim._base import PaperOptimizer, add_scaled_, check_paths, for_slices, zeros_state
from optbench.optim._common import adam_moments_foreach_, check_betas, check_positive, check_unit_interval


def plain_row_dots(rows: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Row-wise dot products as plain expressions (GPU, small tensors), for the compiled kernels (the compiler fuses the sums into its loop)."""
    return [(a * b).sum(1) for a, b in pairs]


def row_dots(rows: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Row-wise dot products (a * b).sum(1) for each (a, b) pair of matrices shaped like ``rows``.

    On the CPU the rows are visited in cache-sized slices and every product of a slice is formed in one reused
    scratch buffer, so each input is read from memory once instead of once per product plus a temporary."""
    if rows.device.type != "cpu" or rows.numel() <= _base.SLICE_ELEMENTS:
        return plain_row_dots(rows, pairs)
    n_rows, n_cols = rows.shape
    step = max(1, _base.SLICE_ELEMENTS // n_cols)
    scratch = torch.empty((min(step, n_rows), n_cols), dtype=rows.dtype)
    out = [torch.empty(n_rows, dtype=rows.dtype) for _ in pairs]
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        buf = scratch[: stop - start]
        for (a, b), result in zip(pairs, out):
            torch.sum(torch.mul(a[start:stop], b[start:stop], out=buf), dim=1, out=result[start:stop])
    return out


def radial_projection(p: torch.Tensor, g: torch.Tensor, update: torch.Tensor, *, delta: float, eps: float,
                      wd_ratio: float, dots=row_dots) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, ratio) for one tensor with p.dim() > 1: the projected update is ``update - c * p`` (c has one value
    per output channel, shaped to broadcast against p) and ratio multiplies the weight decay.
    ``dots``: how the row-wise dot products are formed (``row_dots``, or ``plain_row_dots`` when compiled)."""
    rows, g_rows = p.reshape(p.shape[0], -1), g.reshape(p.shape[0], -1)
    gp, pu = dots(rows, [(g_rows, rows), (update.reshape(rows.shape), rows)])
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


def decay_and_project(p: torch.Tensor, g: torch.Tensor, update: torch.Tensor, *, lr_eff: float, decay: float,
                      group: dict, fold: bool = True) -> torch.Tensor | float:
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


def step_single_(p: torch.Tensor, update: torch.Tensor, scale: torch.Tensor | float, lr_eff: float) -> None:
    """p = p * scale - lr_eff * update (scale: a per-row tensor, a 0-dim tensor or a float)."""
    if isinstance(scale, torch.Tensor) and scale.dim() > 0:
        for_slices(_scaled_step, [p, update, scale], lr_eff=lr_eff, const_scale=1.0)
    else:
        for_slices(_scaled_step, [p, update, None], lr_eff=lr_eff, const_scale=scale)


def _scaled_step(p: torch.Tensor, update: torch.Tensor, row_scale: torch.Tensor | None, *, lr_eff: float,
                 const_scale: torch.Tensor | float) -> None:
    if row_scale is not None:
        p.mul_(row_scale)
    elif isinstance(const_scale, torch.Tensor) or const_scale != 1.0:
        p.mul_(const_scale)
    p.add_(update, alpha=-lr_eff)


def step_multi_(ps: list, updates: list, scales: list, lr_effs: list[float]) -> None:
    tensor_scaled = [i for i, s in enumerate(scales) if isinstance(s, torch.Tensor)]
    float_scaled = [i for i, s in enumerate(scales) if not isinstance(s, torch.Tensor) and s != 1.0]
    if tensor_scaled:
        torch._foreach_mul_([ps[i] for i in tensor_scaled], [scales[i] for i in tensor_scaled])
    if float_scaled:
        torch._foreach_mul_([ps[i] for i in float_scaled], [scales[i] for i in float_scaled])
    add_scaled_(ps, updates, [-x for x in lr_effs])


# ---------------------------------------------------------------------------------------------------- AdamP


def _adam_direction_scale(beta1: float, beta2: float, eps: float, t: int) -> tuple[float, float]:
    """With update' = m / (sqrt(v) + eps * sqrt(1 - b2^t)), the paper's lr / (1 - b1^t) * update equals
    lr_eff * update' for lr_eff = lr * sqrt(1 - b2^t) / (1 - b1^t): the bias correction leaves the big tensors.
    Returns (eps', lr_eff / lr)."""
    bc2_sqrt = math.sqrt(1.0 - beta2**t)
    return eps * bc2_sqrt, bc2_sqrt / (1.0 - beta1**t)


def _adam_direction(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, update: torch.Tensor, *, beta1: float,
                    beta2: float, eps_t: float, nesterov: bool) -> None:
    """Moments in place; update = m / (sqrt(v) + eps_t) (nesterov: (b1 m + (1 - b1) g) in place of m)."""
    m.lerp_(g, 1.0 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    torch.sqrt(v, out=update).add_(eps_t)
    numerator = torch.lerp(m, g, 1.0 - beta1) if nesterov else m
    torch.div(numerator, update, out=update)


def _advance_steps(states: list[dict], group: dict) -> tuple[list[float], list[float]]:
    """Count one more step for each parameter; their (eps', lr_eff) of ``_adam_direction_scale``."""
    beta1, beta2 = group["betas"]
    eps_ts, lr_effs = [], []
    for state in states:
        state["step"] += 1
        eps_t, lr_factor = _adam_direction_scale(beta1, beta2, group["eps"], state["step"])
        eps_ts.append(eps_t)
        lr_effs.append(group["lr"] * lr_factor)
    return eps_ts, lr_effs


def adamp_single_tensor(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
    beta1, beta2 = group["betas"]
    (eps_t,), (lr_eff,) = _advance_steps([state], group)
    update = torch.empty_like(g)
    for_slices(_adam_direction, [g, state["exp_avg"], state["exp_avg_sq"], update], beta1=beta1, beta2=beta2,
               eps_t=eps_t, nesterov=group["nesterov"])
    scale = decay_and_project(p, g, update, lr_eff=lr_eff, decay=group["lr"] * group["weight_decay"], group=group)
    step_single_(p, update, scale, lr_eff)


def adamp_multi_tensor(ps: list, gs: list, states: list[dict], group: dict) -> None:
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    eps_ts, lr_effs = _advance_steps(states, group)
    ms = [s["exp_avg"] for s in states]
    vs = [s["exp_avg_sq"] for s in states]
    adam_moments_foreach_(ms, vs, gs, beta1, beta2)
    updates = torch._foreach_sqrt(vs)
    torch._foreach_add_(updates, eps_ts)
    numerators = torch._foreach_lerp(ms, gs, 1.0 - beta1) if group["nesterov"] else ms
    updates = torch._foreach_div(numerators, updates)
    decay = lr * group["weight_decay"]
    scales = [decay_and_project(p, g, u, lr_eff=lr_eff, decay=decay, group=group)
              for p, g, u, lr_eff in zip(ps, gs, updates, lr_effs)]
    step_multi_(ps, updates, scales, lr_effs)


@_fused.FusedKernel
def _adamp_fused(ps: list, gs: list, ms: list, vs: list, lr_effs: torch.Tensor, eps_ts: torch.Tensor,
                 decay: torch.Tensor, *, beta1: float, beta2: float, eps: float, nesterov: bool, delta: float,
                 wd_ratio: float) -> None:
    """``adamp_single_tensor`` as expressions. Per parameter (float64 vectors): lr_eff and eps' of
    ``_adam_direction_scale``, computed outside so the loops do not re-evaluate powers; decay: lr * weight_decay."""
    for i, (p, g, m, v) in enumerate(zip(ps, gs, ms, vs)):
        lr_eff = lr_effs[i]
        m_new, v_new = torch.lerp(m, g, 1.0 - beta1), v * beta2 + g * g * (1.0 - beta2)
        m.copy_(m_new)
        v.copy_(v_new)
        numerator = torch.lerp(m_new, g, 1.0 - beta1) if nesterov else m_new
        update = numerator / (torch.sqrt(v_new) + eps_ts[i])
        if p.dim() > 1:
            c, ratio = radial_projection(p, g, update, delta=delta, eps=eps, wd_ratio=wd_ratio, dots=plain_row_dots)
            scale = (1.0 - decay * ratio) + lr_eff * c
        else:
            scale = 1.0 - decay
        p.copy_(p * scale - lr_eff * update)


class AdamP(PaperOptimizer):
    """Adam with the radial component of the update removed on scale-invariant weights, and decoupled weight
    decay reduced by wd_ratio on them.

    Args: lr (> 0), betas (two values in [0, 1)), eps (> 0), weight_decay (decoupled, >= 0),
    delta (cosine threshold, > 0), wd_ratio (weight-decay multiplier on scale-invariant weights, in [0, 1]),
    nesterov, foreach, fused (None, None: multi-tensor off the CPU; on it the fused kernel for groups of >= 1M
    elements, else per-tensor). The paper's recommendation: lr 1e-3, weight_decay 1e-2.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, delta: float = 0.1, wd_ratio: float = 0.1,
                 nesterov: bool = False, foreach: bool | None = None, fused: bool | None = None) -> None:
        check_positive("lr", lr)
        check_betas("betas", betas, length=2)
        check_positive("eps", eps)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        _check_projection_args(delta, wd_ratio)
        check_paths(foreach, fused)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, delta=delta,
                        wd_ratio=wd_ratio, nesterov=bool(nesterov), foreach=foreach, fused=fused)
        super().__init__(params, defaults)

    def _init_state(self, param: torch.Tensor, group: dict) -> dict:
        return {"step": 0, "exp_avg": zeros_state(param), "exp_avg_sq": zeros_state(param)}

    def _single_tensor_update(self, group, param, grad, state) -> None:
        adamp_single_tensor(param, grad, state, group)

    def _multi_tensor_update(self, group, params, grads, states) -> None:
        adamp_multi_tensor(params, grads, states, group)

    def _fused_update(self, group, params, grads, states) -> None:
        beta1, beta2 = group["betas"]
        eps_ts, lr_effs = _advance_steps(states, group)
        _adamp_fused(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                     _fused.scalar(lr_effs), _fused.scalar(eps_ts), _fused.scalar(group["lr"] * group["weight_decay"]), beta1=beta1, beta2=beta2, eps=group["eps"],
                     nesterov=group["nesterov"], delta=group["delta"], wd_ratio=group["wd_ratio"])


# ----------------------------------------------------------------------------------------------------- SGDP


def sgdp_single_tensor(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
    momentum, lr, nesterov = group["momentum"], group["lr"], group["nesterov"]
    buf = state["momentum_buffer"]
    d = torch.empty_like(g) if nesterov else buf
    for_slices(_sgd_direction, [g, buf, d if nesterov else None], momentum=momentum,
               dampening=group["dampening"])
    decay = lr * group["weight_decay"] / (1.0 - momentum)
    scale = decay_and_project(p, g, d, lr_eff=lr, decay=decay, group=group, fold=nesterov)
    step_single_(p, d, scale, lr)


def _sgd_direction(g: torch.Tensor, buf: torch.Tensor, d: torch.Tensor | None, *, momentum: float,
                   dampening: float) -> None:
    """buf = momentum * buf + (1 - dampening) * g; d = g + momentum * buf (Nesterov; None: d is buf)."""
    if dampening == 0:
        torch.add(g, buf, alpha=momentum, out=buf)
    else:
        buf.mul_(momentum).add_(g, alpha=1.0 - dampening)
    if d is not None:
        torch.add(g, buf, alpha=momentum, out=d)


def sgdp_multi_tensor(ps: list, gs: list, states: list[dict], group: dict) -> None:
    momentum, dampening, lr = group["momentum"], group["dampening"], group["lr"]
    bufs = [s["momentum_buffer"] for s in states]
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, gs, alpha=1.0 - dampening)
    nesterov = group["nesterov"]
    ds = torch._foreach_add(gs, bufs, alpha=momentum) if nesterov else bufs
    decay = lr * group["weight_decay"] / (1.0 - momentum)
    scales = [decay_and_project(p, g, d, lr_eff=lr, decay=decay, group=group, fold=nesterov)
              for p, g, d in zip(ps, gs, ds)]
    step_multi_(ps, ds, scales, [lr] * len(ps))


@_fused.FusedKernel
def _sgdp_fused(ps: list, gs: list, bufs: list, lr: torch.Tensor, decay: torch.Tensor, *, momentum: float,
                dampening: float, nesterov: bool, delta: float, eps: float, wd_ratio: float) -> None:
    """``sgdp_single_tensor`` as expressions; decay: lr * weight_decay / (1 - momentum)."""
    for p, g, buf in zip(ps, gs, bufs):
        buf_new = g + momentum * buf if dampening == 0 else buf * momentum + g * (1.0 - dampening)
        d = g + momentum * buf_new if nesterov else buf_new
        if p.dim() > 1:
            c, ratio = radial_projection(p, g, d, delta=delta, eps=eps, wd_ratio=wd_ratio, dots=plain_row_dots)
            if nesterov:
                scale = (1.0 - decay * ratio) + lr * c
            else:  # the stored buffer is the projected direction
                d = buf_new = d - c * p
                scale = 1.0 - decay * ratio
        else:
            scale = 1.0 - decay
        buf.copy_(buf_new)
        p.copy_(p * scale - lr * d)


class SGDP(PaperOptimizer):
    """SGD (momentum, dampening, Nesterov as torch.optim.SGD) with the radial component removed on
    scale-invariant weights and decoupled weight decay lr * weight_decay * ratio / (1 - momentum).

    Args: lr (> 0, required), momentum in [0, 1), dampening in [0, 1], weight_decay (>= 0), nesterov (needs
    momentum > 0 and dampening 0), eps (> 0), delta (> 0), wd_ratio (in [0, 1]), foreach.
    fused (None, None: multi-tensor off the CPU; on it the fused kernel for groups of >= 1M elements, else
    per-tensor). The paper's recommendation: lr 0.1, momentum 0.9, nesterov, weight_decay 1e-5.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, eps: float = 1e-8, delta: float = 0.1,
                 wd_ratio: float = 0.1, foreach: bool | None = None, fused: bool | None = None) -> None:
        check_positive("lr", lr)
        check_unit_interval("momentum", momentum)
        if not (math.isfinite(dampening) and 0.0 <= dampening <= 1.0):
            raise ValueError(f"dampening must be in [0, 1], got {dampening!r}")
        check_positive("weight_decay", weight_decay, allow_zero=True)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"nesterov=True needs momentum > 0 and dampening = 0, got momentum={momentum!r}, "
                f"dampening={dampening!r}"
            )
        check_positive("eps", eps)
        _check_projection_args(delta, wd_ratio)
        check_paths(foreach, fused)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=bool(nesterov), eps=eps, delta=delta, wd_ratio=wd_ratio, foreach=foreach,
                        fused=fused)
        super().__init__(params, defaults)

    def _init_state(self, param: torch.Tensor, group: dict) -> dict:
        return {"momentum_buffer": zeros_state(param)}

    def _single_tensor_update(self, group, param, grad, state) -> None:
        sgdp_single_tensor(param, grad, state, group)

    def _multi_tensor_update(self, group, params, grads, states) -> None:
        sgdp_multi_tensor(params, grads, states, group)

    def _fused_update(self, group, params, grads, states) -> None:
        lr, momentum = group["lr"], group["momentum"]
        _sgdp_fused(params, grads, [s["momentum_buffer"] for s in states], _fused.scalar(lr),
                    _fused.scalar(lr * group["weight_decay"] / (1.0 - momentum)), momentum=momentum,
                    dampening=group["dampening"], nesterov=group["nesterov"], delta=group["delta"], eps=group["eps"],
                    wd_ratio=group["wd_ratio"])


def _check_projection_args(delta: float, wd_ratio: float) -> None:
    check_positive("delta", delta)
    if not (math.isfinite(wd_ratio) and 0.0 <= wd_ratio <= 1.0):
        raise ValueError(f"wd_ratio must be in [0, 1], got {wd_ratio!r}")
