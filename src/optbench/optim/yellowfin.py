"""YellowFin (Zhang, Mitliagkas & Re, "YellowFin and the Art of Momentum Tuning", SysML 2019).

Momentum SGD (v = mu v + g; p -= lr v) whose lr and mu are re-tuned every step from gradient statistics,
following REFERENCE.md section 5 step by step; the numbered comments below are its steps 1-8. Optionally
closed-loop: the total momentum mu_hat actually present in the iterates (asynchrony adds some) is measured and
the algorithmic momentum is steered so that mu_hat tracks the tuner's target.

Everything the tuner computes is a 0-d tensor on the parameters' device: ``step()`` never synchronises with
the host. Data-dependent decisions (clipping, exploding gradients, skipping a non-finite gradient, the first
step) are ``torch.where`` selections, never Python branches. Hence:
- ``param_groups[i]['lr']`` and ``['momentum']`` hold 0-d tensors after the first step (a fresh tensor every
  step, so a logged value is never overwritten later).
- A non-finite gradient (or a gradient norm that overflows) leaves every state and every parameter unchanged
  and increments the ``skipped`` counter; its ``.grad`` is zeroed in place (the only write to ``.grad``: an
  applied step leaves it bit-for-bit as it was).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from optbench.optim import _fused
from optbench.optim._base import check_paths, choose_path, for_slices
from optbench.optim._common import (
    evaluate_closure,
    check_positive,
    check_unit_interval,
    group_by_device_and_dtype,
    params_with_grad,
)

EPS = 1e-6  # REFERENCE.md section 5's eps
CLIP_GUARD = 1e-6  # clip_grad_norm_'s guard in max_norm / (norm + 1e-6): the reference clips with that function
CATASTROPHIC_MOVE = 100.0  # step 7: the largest move lr * |g| allowed
_LOW_PRECISION = (torch.float16, torch.bfloat16)

__all__ = ["YFOptimizer", "cubic_root", "momentum_lower_bound", "clip_coefficient", "rescaled_ema"]


# ----------------------------------------------------------------------------------------------------------
# The tuner's formulas (REFERENCE.md section 5). Arguments and results are 0-d tensors.


def clip_coefficient(norm: torch.Tensor, max_norm: torch.Tensor | float) -> torch.Tensor:
    """Factor that clips a gradient of global norm ``norm`` to ``max_norm`` (<= 1), as clip_grad_norm_."""
    return torch.clamp(max_norm / (norm + CLIP_GUARD), max=1.0)


def cubic_root(D: torch.Tensor, C: torch.Tensor, h_min: torch.Tensor) -> torch.Tensor:
    """Step 6: x = sqrt(mu) in [0, 1] minimising x^2 D^2 + (1 - x)^4 C / h_min^2 (with eps as the reference).

    Setting the derivative to zero gives (1 - x)^3 = p x with p = (D + eps)^2 (h_min + eps)^2 / (2 (C + eps)),
    i.e. s = 1 - x is the one real root of s^3 + p s - p = 0. The reference evaluates Cardano's formula,
    w^3 = (-sqrt(p^2 + 4 p^3 / 27) - p) / 2, x = w - p / (3 w) + 1, which overflows for large p (p^3) and
    cancels catastrophically (x is the difference of two numbers of size sqrt(p / 3)). Here the same root comes
    from the hyperbolic form s = 2 sqrt(p / 3) sinh(asinh(3 sqrt(3) / (2 sqrt(p))) / 3) = 3 sinh(asinh(u) / 3) / u
    with u = 3 sqrt(3) / (2 sqrt(p)), and x is taken as 1 - s when s < 1/2 and as s^3 / p (the same number,
    from the cubic) when s >= 1/2, so neither loses digits. p is handled as log p, so no input overflows it.
    Result: finite, in [0, 1], for all non-negative finite D, C, h_min.
    """
    log_p = 2.0 * torch.log(D + EPS) + 2.0 * torch.log(h_min + EPS) - math.log(2.0) - torch.log(C + EPS)
    u = (1.5 * math.sqrt(3.0)) * torch.exp(-0.5 * log_p)
    s_direct = 3.0 * torch.sinh(torch.asinh(u) / 3.0) / u
    s_series = 1.0 - (4.0 / 27.0) * u * u  # u -> 0 (p -> inf); the next term is O(u^4)
    s = torch.where(u < 1e-4, s_series, torch.where(torch.isfinite(u), s_direct, torch.zeros_like(u)))
    x_from_cubic = torch.exp(3.0 * torch.log(s) - log_p)
    return torch.where(s < 0.5, 1.0 - s, x_from_cubic).clamp(0.0, 1.0)


def momentum_lower_bound(h_min: torch.Tensor, h_max: torch.Tensor) -> torch.Tensor:
    """Step 6: ((sqrt(dr) - 1) / (sqrt(dr) + 1))^2 with dr = max((h_max + eps) / (h_min + eps), 1 + eps), the
    smallest momentum for which one lr gives the same contraction over the whole curvature range."""
    sqrt_dr = torch.sqrt(torch.clamp((h_max + EPS) / (h_min + EPS), min=1.0 + EPS))
    return ((sqrt_dr - 1.0) / (sqrt_dr + 1.0)) ** 2


def _ema(average: torch.Tensor, value: torch.Tensor, beta: float) -> torch.Tensor:
    return beta * average + (1.0 - beta) * value


_TUNER_SCALARS = ("step", "skipped", "g2_avg", "gnorm_avg", "dist_avg", "h_min_avg", "h_max_avg",
                  "h_min", "h_max", "C", "D", "lr", "mu")


def _tune(t: dict, g2: torch.Tensor, grad_avg_sq: torch.Tensor, cfg: dict) -> dict:
    """Steps 2-6 for one step with (clipped) squared gradient norm g2 and sum ||gbar||^2 = grad_avg_sq, the
    gradient average already updated. Returns the new scalars (the caller keeps the old ones on a skip)."""
    beta, width = cfg["beta"], cfg["curv_win_width"]
    k = t["step"]  # updates applied so far; the reference's iteration counter
    debias = 1.0 - torch.pow(beta, k + 1.0) if cfg["zero_debias"] else torch.ones_like(k)
    new = {}
    # 2. EMA of the squared gradient norm
    new["g2_avg"] = g2_avg = _ema(t["g2_avg"], g2, beta)
    # 3. curvature range from the last `width` values of g2 (ring buffer; the first min(width, k + 1) valid)
    slots = torch.arange(width, device=g2.device)
    new["window"] = window = torch.where(slots == torch.remainder(k, width), g2, t["window"])
    valid = slots < k + 1
    lowest = torch.where(valid, window, torch.full_like(window, math.inf)).amin()
    highest = torch.where(valid, window, torch.full_like(window, -math.inf)).amax()
    for name, extreme, log_smooth in (("h_min", lowest, cfg["h_min_log_smooth"]),
                                      ("h_max", highest, cfg["h_max_log_smooth"])):
        sample = torch.log(extreme + EPS) if log_smooth else extreme
        new[f"{name}_avg"] = avg = _ema(t[f"{name}_avg"], sample, beta)
        new[name] = torch.exp(avg / debias) if log_smooth else avg / debias
    h_min, h_max = new["h_min"], new["h_max"]
    # 4. gradient variance
    new["C"] = C = torch.clamp(g2_avg / debias - grad_avg_sq / debias**2, min=EPS)
    # 5. distance to the optimum
    new["gnorm_avg"] = gnorm_avg = _ema(t["gnorm_avg"], torch.sqrt(g2), beta)
    new["dist_avg"] = dist_avg = _ema(t["dist_avg"], gnorm_avg / (g2_avg + EPS), beta)
    new["D"] = D = dist_avg / debias
    # 6. momentum from the cubic, bounded below by the curvature range; lr from mu; slow start
    x = cubic_root(D, C, h_min)
    mu = torch.maximum(x * x, momentum_lower_bound(h_min, h_max))
    lr = (1.0 - torch.sqrt(mu)) ** 2 / (h_min + EPS)
    lr = torch.minimum(lr, lr * (k + 1.0) / (10.0 * width))
    first = k == 0  # before the first update: the constructor's values
    new["mu"] = torch.where(first, cfg["mu"], mu)
    new["lr"] = torch.where(first, cfg["lr"], lr)
    return new


# ----------------------------------------------------------------------------------------------------------
# Per-parameter work: the gradient average (step 4) and the momentum SGD step (steps 7-8), per tensor and
# with torch._foreach_* on buckets of one (device, dtype). Scalars are 0-d tensors on the device.
#
# Both averages are kept as a global scalar times a tensor, a = scale * A, so that an EMA
# a <- keep * a + weight * g is a single lerp over memory instead of a multiply and an add:
#     scale' = keep * scale + weight,  A <- lerp(A, g, weight / scale')
# (then scale' * A' = keep * scale * A + weight * g exactly). scale stays positive and bounded: it starts at 1,
# keep >= 0 and weight > 0 on an applied step, keep = 1 and weight = 0 on a skipped one, and it tends to
# weight / (1 - keep). This removes two of the eight elementwise operations per step (benchmarks/optim_step.py).


def rescaled_ema(scale: torch.Tensor, keep: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(new scale, lerp weight) for a <- keep * a + weight * g on a = scale * A."""
    new_scale = keep * scale + weight
    return new_scale, weight / new_scale


def _sanitize_and_average(g, avg, *, mask, lerp_weight) -> None:
    if mask is not None:  # _zero_on_skip of this slice, while it is in the cache for the lerp
        g.view(mask.dtype).bitwise_and_(mask)
    avg.lerp_(g, lerp_weight)


def _grad_avg_single(grads, avgs, lerp_weight, skip_mask=None) -> list[torch.Tensor]:
    """A <- lerp(A, g, lerp_weight) (the scaled gbar); returns ||A|| per tensor. With ``skip_mask`` (see
    ``_zero_on_skip``) the gradient is sanitised in the same cache-sized slices (CPU) instead of a pass of its own."""
    norms = []
    for g, avg in zip(grads, avgs):
        for_slices(_sanitize_and_average, [g, avg], mask=skip_mask, lerp_weight=lerp_weight)
        norms.append(torch.linalg.vector_norm(avg))
    return norms


def _grad_avg_foreach(grads, avgs, lerp_weight, skip_mask=None) -> list[torch.Tensor]:
    if skip_mask is not None:
        for g in grads:
            g.view(skip_mask.dtype).bitwise_and_(skip_mask)
    torch._foreach_lerp_(avgs, grads, [lerp_weight] * len(grads))
    return list(torch._foreach_norm(avgs))


def _momentum_kernel(p, g, b, *, lerp_weight, decay, neg_step) -> None:
    b.lerp_(g, lerp_weight)
    if decay is not None:
        b.addcmul_(p, decay)
    p.addcmul_(b, neg_step)


def _momentum_single(params, grads, bufs, lerp_weight, decay, neg_step) -> None:
    """B <- lerp(B, g, lerp_weight) (+ decay * p), the scaled velocity; p <- p + neg_step * B. On the CPU in
    cache-sized slices (optbench.optim._base.for_slices): B is written and read back while in the cache."""
    for p, g, b in zip(params, grads, bufs):
        for_slices(_momentum_kernel, [p, g, b], lerp_weight=lerp_weight, decay=decay, neg_step=neg_step)


def _momentum_foreach(params, grads, bufs, lerp_weight, decay, neg_step) -> None:
    n = len(params)
    torch._foreach_lerp_(bufs, grads, [lerp_weight] * n)
    if decay is not None:
        torch._foreach_addcmul_(bufs, params, [decay] * n)
    torch._foreach_addcmul_(params, bufs, [neg_step] * n)


# The fused CPU path (optim/_fused.py) reads each tensor twice per step. One compiled pass over g and the scaled
# gbar A sums g.g, A.A and A.g: g.g gives ||g|| for the clip, and once the clip has fixed the lerp weight w,
#     ||lerp(A, g, w)||^2 = (1 - w)^2 A.A + 2 w (1 - w) A.g + w^2 g.g
# gives the new gbar's norm without touching memory again (each term is a sum of float32 products, the same
# rounding as the norm of the updated gbar; the expansion is formed in float64). A second pass updates gbar and
# takes the momentum step together (reads p, g, A, B; writes A, B, p).


@_fused.FusedKernel
def _gradient_sums_fused(grads: list, avgs: list) -> torch.Tensor:
    """(g.g, A.A, A.g) summed over the tensors."""
    return torch.stack([torch.stack([(g * g).sum(), (a * a).sum(), (a * g).sum()])
                        for g, a in zip(grads, avgs)]).sum(0)


def _new_avg_sq(sums: torch.Tensor, ok: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """||lerp(A, g, w)||^2 from ``_gradient_sums_fused`` (float64); a skipped step (w = 0) keeps A.A."""
    gg, aa, ag = sums.to(torch.float64).unbind()
    w = w.to(torch.float64)
    return torch.where(ok, (1.0 - w) ** 2 * aa + 2.0 * w * (1.0 - w) * ag + w * w * gg, aa)


@_fused.FusedKernel
def _avg_and_momentum_fused(params: list, grads: list, avgs: list, bufs: list, ok: torch.Tensor,
                            avg_weight: torch.Tensor, lerp_weight: torch.Tensor, decay: torch.Tensor | None,
                            neg_step: torch.Tensor) -> None:
    """The gbar lerp of ``_grad_avg_single`` and ``_momentum_kernel`` in one compiled pass per tensor (a skipped
    step's gradient is read as 0; the eager paths zero it in place)."""
    for p, g, a, b in zip(params, grads, avgs, bufs):
        g_ok = torch.where(ok, g, 0.0)
        a.copy_(torch.lerp(a, g_ok, avg_weight))
        new = torch.lerp(b, g_ok, lerp_weight)
        if decay is not None:
            new = new + p * decay
        b.copy_(new)
        p.copy_(p + new * neg_step)


def _norms(grads: Sequence[torch.Tensor], foreach: bool) -> list[torch.Tensor]:
    """||g|| per tensor, accumulated in at least float32."""
    if foreach and grads[0].dtype not in _LOW_PRECISION:
        return list(torch._foreach_norm(grads))
    return [torch.linalg.vector_norm(g, dtype=torch.promote_types(g.dtype, torch.float32)) for g in grads]


_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _zero_on_skip(grads: Sequence[torch.Tensor], ok: torch.Tensor) -> None:
    """Zero the gradients in place when ``ok`` is False, leave them bit-for-bit alone when it is True.

    A skipped step multiplies the gradient by 0, but NaN * 0 is NaN, so its non-finite entries must go before
    any state sees them. An AND of the gradient's bits with a device-side mask (all ones, or all zeros on a
    skip) does that without a host sync and costs one plain pass (cheaper than nan_to_num_)."""
    mask = _skip_mask(grads[0], ok)
    for g in grads:
        g.view(mask.dtype).bitwise_and_(mask)


def _skip_mask(grad: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """All bits set (-1) when ok, all clear on a skip, as an integer of the gradient's element size."""
    return -ok.to(device=grad.device, dtype=_SAME_SIZE_INT[grad.element_size()])


def _state_dtype(param: torch.Tensor) -> torch.dtype:
    """Optimizer state of 16-bit parameters is float32: a 16-bit EMA cannot represent a decay of 0.999."""
    return torch.float32 if param.dtype in _LOW_PRECISION else param.dtype


# ----------------------------------------------------------------------------------------------------------


class YFOptimizer(torch.optim.Optimizer):
    """YellowFin: momentum SGD with lr and momentum tuned every step (REFERENCE.md section 5).

    Args (the reference PyTorch constructor, plus the options below):
        lr, mu: learning rate and momentum of the first step only; afterwards the tuner sets both.
        clip_thresh: if set, the global gradient norm is clipped to it before anything else.
        weight_decay: coupled L2 added to the gradient of the momentum SGD step (not to the statistics).
        beta: decay of every EMA of the tuner. curv_win_width: window of the curvature range (step 3).
        zero_debias, h_min_log_smooth, h_max_log_smooth: as in the reference.
        adapt_clip: the tuner's data-driven clips: adaptive norm clip (step 1), exploding-gradient clip (step 8)
            and the catastrophic-move guard (step 7).
        lr_factor: multiplier of the tuned lr; the configured lr schedule scales it (``set_lr_factor``).
            weight_decay and lr_factor may differ per parameter group; the tuner is one for all groups.
        closed_loop, feedback_gain: closed-loop YellowFin: the momentum SGD uses mu_alg = mu + correction in [0, 1),
            correction <- correction + feedback_gain * (mu - mu_hat), mu_hat the measured total momentum (see
            ``_close_the_loop``; ``attach_gradient_delay`` for how mu_hat sees simulated asynchrony).
        log_stats: ``extras()`` also reports h_min, h_max, C, D and the count of skipped steps.
        foreach, fused: the code path of the per-parameter passes: multi-tensor (foreach=True), per-tensor
            (foreach=False), or compiled CPU kernels (fused=True, optim/_fused.py). None, None picks the
            multi-tensor path off the CPU, and on it the fused kernels for models of >= 1M parameters, else the
            per-tensor one. The fused kernels take full-precision gradients and no simulated asynchrony
            (``attach_gradient_delay``); otherwise the per-tensor path runs. They read a skipped step's gradient
            as 0 without zeroing it in place (the eager paths zero it), which saves a pass.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        mu: float = 0.0,
        clip_thresh: float | None = None,
        weight_decay: float = 0.0,
        beta: float = 0.999,
        curv_win_width: int = 20,
        zero_debias: bool = True,
        h_min_log_smooth: bool = True,
        h_max_log_smooth: bool = True,
        adapt_clip: bool = True,
        lr_factor: float = 1.0,
        closed_loop: bool = False,
        feedback_gain: float = 0.01,
        log_stats: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        check_positive("lr", lr)
        check_unit_interval("mu", mu)
        if clip_thresh is not None:
            check_positive("clip_thresh", clip_thresh)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        check_unit_interval("beta", beta)
        if isinstance(curv_win_width, bool) or not isinstance(curv_win_width, int) or curv_win_width < 1:
            raise ValueError(f"curv_win_width must be an integer >= 1, got {curv_win_width!r}")
        check_positive("lr_factor", lr_factor, allow_zero=True)
        check_positive("feedback_gain", feedback_gain, allow_zero=True)
        check_paths(foreach, fused)
        defaults = dict(lr=lr, momentum=mu, weight_decay=weight_decay, lr_factor=lr_factor)
        super().__init__(params, defaults)
        self._cfg = dict(lr=float(lr), mu=float(mu), clip_thresh=clip_thresh, beta=float(beta),
                         curv_win_width=curv_win_width, zero_debias=bool(zero_debias),
                         h_min_log_smooth=bool(h_min_log_smooth), h_max_log_smooth=bool(h_max_log_smooth),
                         adapt_clip=bool(adapt_clip), closed_loop=bool(closed_loop),
                         feedback_gain=float(feedback_gain))
        self.log_stats = bool(log_stats)
        self.foreach, self.fused = foreach, fused
        self.tuner: dict[str, torch.Tensor] = {}
        self._gradient_delay = None

    # ---------------------------------------------------------------- protocol used by the trainer
    def set_lr_factor(self, factor: float) -> None:
        """Schedules scale the tuned lr: lr_factor = (the group's constructor lr_factor) * factor."""
        for group in self.param_groups:
            group.setdefault("initial_lr_factor", group["lr_factor"])
            group["lr_factor"] = group["initial_lr_factor"] * float(factor)

    def extras(self) -> dict[str, float | torch.Tensor]:
        """Tuned momentum ``mu`` (closed loop adds ``mu_alg`` and ``mu_hat``; log_stats adds h_min, h_max, C, D,
        ``skipped``). 0-d tensors on the device; the lr is in param_groups."""
        names = ["mu"]
        if self._cfg["closed_loop"]:
            names += ["mu_alg", "mu_hat"]
        if self.log_stats:
            names += ["h_min", "h_max", "C", "D", "skipped"]
        if not self.tuner:  # before the first step
            initial = {"mu": self._cfg["mu"], "mu_alg": self._cfg["mu"], "mu_hat": self._cfg["mu"]}
            return {name: initial.get(name, 0.0) for name in names}
        return {name: self.tuner[name] for name in names}

    def attach_gradient_delay(self, delay) -> None:
        """Closed loop under simulated asynchrony (optbench.staleness.DelayedGradients): measure mu_hat against
        the gradient computed at the current iterate (``delay.fresh_grad(p)``) while the step applies the stale
        one in ``p.grad``.

        Why: the total momentum is the mu_T of x_{t+1} - x_t = mu_T (x_t - x_{t-1}) - lr grad f(x_t)
        (Mitliagkas et al., "Asynchrony begets momentum"). Measured with the gradient the step itself applied,
        the estimator is an identity (it returns the algorithmic mu whatever the staleness), so the fresh
        gradient must come from where the staleness is simulated. Without a delay attached, fresh = applied.
        """
        self._gradient_delay = delay

    # ---------------------------------------------------------------- state
    def grad_avg(self, param: torch.Tensor) -> torch.Tensor:
        """The gradient average gbar of ``param`` (stored rescaled, see ``rescaled_ema``)."""
        return self.tuner["grad_avg_scale"] * self.state[param]["scaled_grad_avg"]

    def momentum_buffer(self, param: torch.Tensor) -> torch.Tensor:
        """The velocity v of ``param`` in v <- mu v + g; p <- p - lr v (stored rescaled)."""
        return self.tuner["velocity_scale"] * self.state[param]["scaled_velocity"]

    def _init_tuner(self, device: torch.device, dtype: torch.dtype) -> None:
        zero = torch.zeros((), device=device, dtype=dtype)
        self.tuner = {name: zero for name in _TUNER_SCALARS}
        self.tuner["lr"] = torch.full_like(zero, self._cfg["lr"])
        self.tuner["mu"] = torch.full_like(zero, self._cfg["mu"])
        self.tuner["window"] = torch.zeros(self._cfg["curv_win_width"], device=device, dtype=dtype)
        self.tuner["grad_avg_scale"] = self.tuner["velocity_scale"] = torch.ones_like(zero)
        self.tuner["mu_alg"] = self.tuner["mu_hat"] = self.tuner["mu"]
        self.tuner["mu_correction"] = zero

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["tuner"] = dict(self.tuner)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        tuner = state_dict.pop("tuner", {})
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        # torch casts state to the parameter's dtype; 16-bit parameters keep float32 state (no rounding)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        for saved_id, param in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id)
            if saved is not None and _state_dtype(param) != param.dtype:
                self.state[param] = {k: v.to(device=param.device, dtype=_state_dtype(param))
                                     for k, v in saved.items()}
        self.tuner = {k: v.to(params[0].device) for k, v in tuner.items()}

    # ---------------------------------------------------------------- step

    def _prepare(self, params: list[torch.Tensor]) -> None:
        if not self.tuner:
            stats_dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
            self._init_tuner(params[0].device, stats_dtype)
        for p in params:
            state = self.state[p]
            if not state:
                zeros = torch.zeros_like(p, dtype=_state_dtype(p), memory_format=torch.preserve_format)
                state["scaled_grad_avg"], state["scaled_velocity"] = zeros, torch.zeros_like(zeros)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = evaluate_closure(closure)
        groups = [(group, list(params_with_grad(group, "YFOptimizer"))) for group in self.param_groups]
        idle = [p for group in self.param_groups for p in group["params"] if p.grad is None and self.state.get(p)]
        groups = [(group, params) for group, params in groups if params]
        if not groups:
            return loss
        params = [p for _, group_params in groups for p in group_params]
        path = choose_path({"foreach": self.foreach, "fused": self.fused}, params, has_fused=True)
        if path == "fused" and (self._gradient_delay is not None
                                or any(p.grad.dtype in _LOW_PRECISION for p in params)):
            path = "single"
        foreach, fused = path == "foreach", path == "fused"
        self._prepare(params)
        t, cfg = self.tuner, self._cfg
        device, dtype = t["g2_avg"].device, t["g2_avg"].dtype
        buckets = list(group_by_device_and_dtype([params, [p.grad for p in params]]).values())

        # 1. global gradient norm (a non-finite one: skip the step), clipping
        if fused:
            sums = [_gradient_sums_fused(grads, [self.state[p]["scaled_grad_avg"] for p in bucket])
                    for bucket, grads in buckets]
            raw_norm = torch.sqrt(sum(x[0].to(device=device, dtype=torch.float64) for x in sums)).to(dtype)
        else:
            raw_norm = torch.sqrt(_sum_of_squares(device, dtype, [_norms(grads, foreach) for _, grads in buckets]))
        ok = torch.isfinite(raw_norm)
        # full-precision gradients are sanitised inside the gbar update below (one pass less); 16-bit ones first,
        # since they are converted to float32 before it
        fuse_skip = all(p.grad.dtype not in _LOW_PRECISION for p in params)
        if not fuse_skip:
            for _, grads in buckets:
                _zero_on_skip(grads, ok)
        clip, explode_clip, g2 = _clip_factors(torch.where(ok, raw_norm, 0.0), t["step"], t["h_max"], cfg)
        if any(_state_dtype(p) != p.dtype for p in params):  # lerp needs the state's dtype: 16-bit -> float32
            buckets = [(bucket, [g.to(_state_dtype(g)) for g in grads]) for bucket, grads in buckets]
        applied = ok.to(dtype)  # 0 on a skip: multiplies everything a skipped step must not add (all finite)

        # 4 (per parameter). gbar <- beta gbar + (1 - beta) g, then sum ||gbar||^2
        beta = cfg["beta"]
        previous = dict(t)
        t["grad_avg_scale"], avg_weight = rescaled_ema(
            previous["grad_avg_scale"], 1.0 - (1.0 - beta) * applied, (1.0 - beta) * clip * applied)
        if fused:  # the update itself happens with the momentum step below
            scaled_sq = sum(_new_avg_sq(x, ok.to(x.device), _like(avg_weight, bucket[0])).to(device)
                            for x, (bucket, _) in zip(sums, buckets)).to(dtype)
        else:
            update_avgs = _grad_avg_foreach if foreach else _grad_avg_single
            scaled_sq = _sum_of_squares(device, dtype, [
                update_avgs(grads, [self.state[p]["scaled_grad_avg"] for p in bucket], _like(avg_weight, bucket[0]),
                            _skip_mask(grads[0], ok) if fuse_skip else None)
                for bucket, grads in buckets])

        # 2-6. the tuner's scalars; a skipped step keeps the old ones
        for name, value in _tune(previous, g2, t["grad_avg_scale"] ** 2 * scaled_sq, cfg).items():
            t[name] = torch.where(ok, value, previous[name])
        t["step"] = previous["step"] + applied
        t["skipped"] = previous["skipped"] + (1.0 - applied)
        momentum = t["mu"]
        if cfg["closed_loop"]:
            momentum = self._close_the_loop(previous, buckets, clip * explode_clip, ok)

        # 7-8. per group: lr * lr_factor with the catastrophic-move guard, then the momentum SGD step; the
        # exploding-gradient clip (step 8) is folded into the gradient's weight
        t["velocity_scale"], velocity_weight = rescaled_ema(
            previous["velocity_scale"], torch.where(ok, momentum, 1.0), clip * explode_clip * applied)
        step_momentum = _momentum_foreach if foreach else _momentum_single
        work_grads = {p: g for bucket, grads in buckets for p, g in zip(bucket, grads)}
        for group, group_params in groups:
            lr = t["lr"] * group["lr_factor"]
            if cfg["adapt_clip"]:
                too_far = lr * torch.sqrt(g2) >= CATASTROPHIC_MOVE
                lr = torch.where(too_far, CATASTROPHIC_MOVE / torch.sqrt(g2 + EPS), lr)
            decay = group["weight_decay"] * applied / t["velocity_scale"] if group["weight_decay"] != 0 else None
            neg_step = -lr * applied * t["velocity_scale"]
            group_grads = [work_grads[p] for p in group_params]
            for bucket, grads in group_by_device_and_dtype([group_params, group_grads]).values():
                bufs = [self.state[p]["scaled_velocity"] for p in bucket]
                scalars = (_like(velocity_weight, bucket[0]), None if decay is None else _like(decay, bucket[0]),
                           _like(neg_step, bucket[0]))
                if fused:
                    _avg_and_momentum_fused(bucket, grads, [self.state[p]["scaled_grad_avg"] for p in bucket], bufs,
                                            ok, _like(avg_weight, bucket[0]), *scalars)
                else:
                    step_momentum(bucket, grads, bufs, *scalars)
            group["lr"] = _keep_on_skip(ok, lr, group["lr"])
            group["momentum"] = _keep_on_skip(ok, momentum, group["momentum"])
        for p in idle:  # parameters without a gradient keep their averages: undo the shared scales' change
            self.state[p]["scaled_grad_avg"].mul_(_like(previous["grad_avg_scale"] / t["grad_avg_scale"], p))
            self.state[p]["scaled_velocity"].mul_(_like(previous["velocity_scale"] / t["velocity_scale"], p))
        return loss

    def _close_the_loop(self, previous: dict, buckets: list, grad_scale: torch.Tensor, ok: torch.Tensor):
        """Closed loop: returns the momentum to apply, mu_alg = mu + correction (in [0, 1)), and measures mu_hat.

        Feedback: correction <- correction + gain * (mu - mu_hat). While the tuner's mu stays put this is the
        paper's mu_alg <- mu_alg + gain * (mu - mu_hat); a moving mu is fed forward instead of being followed
        1 / gain steps late (the correction only has to learn the momentum that asynchrony adds).

        mu_hat is REFERENCE.md's estimator, the median over coordinates of
        (x_{t+1} - x_t + lr u(x_t)) / (x_t - x_{t-1}), u(x_t) the update direction from the gradient at x_t. It needs
        no stored iterate: with x_t - x_{t-1} = -lr_{t-1} v and x_{t+1} - x_t = -lr_t (mu_alg v + u_applied) it is
        (lr_t / lr_{t-1}) (mu_alg + c (g_applied - g_fresh) / v), c the gradient's clip factor (> 0, so it leaves
        the median). We drop lr_t / lr_{t-1}: momentum is measured per unit of lr (on the velocity that mu
        multiplies), so the tuner's own lr changes (slow start, lr_factor) are not read as momentum. Synchronous
        training gives mu_hat = mu_alg exactly. Cost, only with a gradient delay attached: a float32 temporary the
        size of the model and a median over it.
        """
        t = self.tuner
        momentum = torch.clamp(t["mu"] + previous["mu_correction"], 0.0, 0.999)
        shift = torch.zeros_like(momentum)
        if self._gradient_delay is not None:
            ratios = []
            for bucket, grads in buckets:
                for p, g in zip(bucket, grads):
                    fresh = self._gradient_delay.fresh_grad(p)
                    if fresh is not None and fresh is not g:
                        v = self.state[p]["scaled_velocity"]  # v / velocity_scale
                        ratios.append(((g.float() - fresh.float()) / v.float()).flatten().to(momentum.device))
            if ratios:  # 0 / 0 (a coordinate that never moved) is NaN, which nanmedian ignores
                median = torch.nanmedian(torch.cat(ratios)).to(momentum.dtype) / previous["velocity_scale"]
                shift = torch.where(torch.isfinite(median), grad_scale * median, shift)
        mu_hat = momentum + shift
        measured = ok & (previous["step"] >= 1)  # a first step has no previous move to compare with
        correction = previous["mu_correction"] + self._cfg["feedback_gain"] * (t["mu"] - mu_hat)
        t["mu_correction"] = torch.where(measured, correction.clamp(-1.0, 1.0), previous["mu_correction"])
        t["mu_hat"] = torch.where(measured, mu_hat, previous["mu_hat"])
        t["mu_alg"] = torch.where(ok, momentum, previous["mu_alg"])
        return momentum


def _like(scalar: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A tuner scalar on the parameter's device in its state's dtype (lerp wants its weight in that dtype)."""
    return scalar.to(device=param.device, dtype=_state_dtype(param))


def _keep_on_skip(ok: torch.Tensor, new: torch.Tensor, old: Any) -> torch.Tensor:
    return torch.where(ok, new, old) if torch.is_tensor(old) else new


def _sum_of_squares(device: torch.device, dtype: torch.dtype, norms: list[list[torch.Tensor]]) -> torch.Tensor:
    """sum ||x||^2 from per-tensor norms of every (device, dtype) bucket, in the tuner's device and dtype."""
    per_bucket = [torch.stack(bucket).to(device=device, dtype=dtype) for bucket in norms]
    stacked = per_bucket[0] if len(per_bucket) == 1 else torch.cat(per_bucket)
    return torch.dot(stacked, stacked)


def _clip_factors(norm: torch.Tensor, k: torch.Tensor, h_max_prev: torch.Tensor, cfg: dict):
    """Steps 1, 2 and 8: the clip factor of the gradient the statistics see, the extra factor of the exploding-
    gradient clip (applied to the momentum step only), and g2, the squared norm after clipping."""
    clip = torch.ones_like(norm)
    if cfg["clip_thresh"] is not None:
        clip = clip_coefficient(norm, cfg["clip_thresh"])
    explode_clip = torch.ones_like(norm)
    if cfg["adapt_clip"]:
        adaptive = clip_coefficient(norm * clip, torch.sqrt(100.0 * h_max_prev) + EPS)
        clip = torch.where(k > 1, clip * adaptive, clip)
    g2 = (norm * clip) ** 2
    if cfg["adapt_clip"]:
        exploding = (k >= 1) & (g2 >= h_max_prev)
        explode_clip = torch.where(exploding, clip_coefficient(norm * clip, torch.sqrt(h_max_prev) + EPS), 1.0)
    return clip, explode_clip, g2
