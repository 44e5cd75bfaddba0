"""YellowFin (Zhang, Mitliagkas & Re, "YellowFin and the Art of Momentum Tuning", SysML 2019).

Momentum SGD (v = mu v + g; p -= lr v) whose lr and mu are re-tuned every step from gradient statistics,
following REFERENCE.md section 5 step by step; the numbered comments below are its steps 1-8. It matches the
official PyTorch implementation (JianGoForIt/YellowFin_Pytorch, tuner_utils/yellowfin.py) step for step, checked
against an independent re-implementation of it in tests/yellowfin_reference.py, including a quirk of that code:
the torch.optim.SGD it wraps keeps no momentum buffer while the momentum is 0, so with the default mu = 0 the
first step's gradient never enters the velocity (see ``YFOptimizer``). The total momentum mu_hat actually present
in the iterates (asynchrony adds some) is measured and reported; optionally closed-loop, the algorithmic momentum
is steered so that mu_hat tracks the tuner's target.

Everything the tuner computes is a 0-d tensor on the parameters' device: ``step()`` never synchronises with
the host. Data-dependent decisions (clipping, exploding gradients, skipping a non-finite gradient, the first
step) are ``torch.where`` selections, never Python branches. Hence:
- ``param_groups[i]['lr']`` and ``['momentum']`` hold 0-d tensors after the first step (a fresh tensor every
  step, so a logged value is never overwritten later).
- A non-finite gradient (or a gradient norm that overflows) leaves every state and every parameter unchanged
  and increments the ``skipped`` counter; ``.grad`` is never written.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch

from optbench.optim._base import Bucket, PaperOptimizer, zeros_state
from optbench.optim._checks import check_flag, check_positive, check_unit_interval

EPS = 1e-6  # REFERENCE.md section 5's eps
CLIP_GUARD = 1e-6  # clip_grad_norm_'s guard in max_norm / (norm + 1e-6): the reference clips with that function

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
                  "h_min", "h_max", "C", "D", "lr", "mu", "started")
# kept only with sparsity_debias / force_non_inc_step (see _sparsity_debias, _non_increasing_step)
_SPARSITY_SCALARS = ("sparsity_avg",)
_NON_INCREASING_SCALARS = ("lr_smooth", "g2_log_avg", "lr_gnorm_avg", "lr_gnorm_min", "lr_bound")


def _tune(t: dict, g2: torch.Tensor, grad_avg_sq: torch.Tensor, cfg: dict,
          nonzero_fraction: torch.Tensor | None = None) -> dict:
    """Steps 2-6 for one step with (clipped) squared gradient norm g2 and sum ||gbar||^2 = grad_avg_sq, the
    gradient average already updated, and (sparsity_debias) the fraction of non-zero gradient entries. Returns
    the new scalars (the caller keeps the old ones on a skip)."""
    beta = cfg["beta"]
    k = t["step"]  # updates applied so far; the reference's iteration counter
    debias = 1.0 - torch.pow(beta, k + 1.0) if cfg["zero_debias"] else torch.ones_like(k)
    # 2. EMA of the squared gradient norm
    new = {"g2_avg": _ema(t["g2_avg"], g2, beta)}
    # 3. curvature range
    new.update(_curvature_range(t, g2, debias, cfg))
    # 4. gradient variance
    new["C"] = torch.clamp(new["g2_avg"] / debias - grad_avg_sq / debias**2, min=EPS)
    # 5. distance to the optimum
    new["gnorm_avg"] = gnorm_avg = _ema(t["gnorm_avg"], torch.sqrt(g2), beta)
    new["dist_avg"] = dist_avg = _ema(t["dist_avg"], gnorm_avg / (new["g2_avg"] + EPS), beta)
    new["D"] = dist_avg / debias
    if nonzero_fraction is not None:
        new.update(_sparsity_debias(t, new, nonzero_fraction, beta))
    # 6. momentum from the cubic, bounded below by the curvature range; lr from mu; slow start
    h_min, h_max = new["h_min"], new["h_max"]
    x = cubic_root(new["D"], new["C"], h_min)
    mu = torch.maximum(x * x, momentum_lower_bound(h_min, h_max))
    lr = (1.0 - torch.sqrt(mu)) ** 2 / (h_min + EPS)
    lr = torch.minimum(lr, lr * (k + 1.0) / (10.0 * cfg["curv_win_width"]))
    first = k == 0  # before the first update: the constructor's values
    new["mu"] = torch.where(first, cfg["mu"], mu)
    new["lr"] = torch.where(first, cfg["lr"], lr)
    if cfg["force_non_inc_step"]:
        new.update(_non_increasing_step(t, g2, torch.where(first, t["lr_smooth"], _ema(t["lr_smooth"], lr, beta)),
                                        cfg))
    return new


def _curvature_range(t: dict, g2: torch.Tensor, debias: torch.Tensor, cfg: dict) -> dict:
    """Step 3: h_min and h_max from the last ``width`` values of g2 (a ring buffer; the first min(width, k + 1)
    slots valid), smoothed by an EMA of their logarithms (or of themselves)."""
    k, width = t["step"], cfg["curv_win_width"]
    slots = torch.arange(width, device=g2.device)
    window = torch.where(slots == torch.remainder(k, width), g2, t["window"])
    valid = slots < k + 1
    lowest = torch.where(valid, window, torch.full_like(window, math.inf)).amin()
    highest = torch.where(valid, window, torch.full_like(window, -math.inf)).amax()
    new = {"window": window}
    for name, extreme, log_smooth in (("h_min", lowest, cfg["h_min_log_smooth"]),
                                      ("h_max", highest, cfg["h_max_log_smooth"])):
        sample = torch.log(extreme + EPS) if log_smooth else extreme
        new[f"{name}_avg"] = avg = _ema(t[f"{name}_avg"], sample, cfg["beta"])
        new[name] = torch.exp(avg / debias) if log_smooth else avg / debias
    return new


def _sparsity_debias(t: dict, new: dict, nonzero_fraction: torch.Tensor, beta: float) -> dict:
    """sparsity_debias (the reference's grad_sparsity): s = EMA of the non-zero fraction of the gradient's entries,
    debiased by 1 - beta^(k + 1) whether or not zero_debias is on; h_min, h_max and C are multiplied by s and D
    is divided by sqrt(s) + eps (a sparse minibatch gradient overstates the dense gradient's norm)."""
    sparsity_avg = _ema(t["sparsity_avg"], nonzero_fraction, beta)
    s = sparsity_avg / (1.0 - torch.pow(beta, t["step"] + 1.0))
    return {"sparsity_avg": sparsity_avg, "h_min": new["h_min"] * s, "h_max": new["h_max"] * s,
            "C": new["C"] * s, "D": new["D"] / (torch.sqrt(s) + EPS)}


def _non_increasing_step(t: dict, g2: torch.Tensor, lr_smooth: torch.Tensor, cfg: dict) -> dict:
    """force_non_inc_step (the reference's lr_grad_norm_avg): after ``curv_win_width`` updates the lr is bounded by
    lr_bound = 2 min_t(smoothed lr * |g|) / smoothed |g|, the smoothing EMAs in log space started at that point
    but debiased by 1 - beta^(k + 1) as if they had run from the first step (as the reference does). lr_smooth is
    the EMA of the tuned lr (from the constructor's lr, from the second step on) that the bound also caps."""
    beta, k = cfg["beta"], t["step"]
    debias = 1.0 - torch.pow(beta, k + 1.0)
    g2_log_avg = _ema(t["g2_log_avg"], torch.log(g2 + EPS), beta)
    lr_gnorm_avg = _ema(t["lr_gnorm_avg"], torch.log(lr_smooth * torch.sqrt(g2) + EPS), beta)
    lr_gnorm_min = torch.minimum(t["lr_gnorm_min"], torch.exp(lr_gnorm_avg / debias))
    new = {"g2_log_avg": g2_log_avg, "lr_gnorm_avg": lr_gnorm_avg, "lr_gnorm_min": lr_gnorm_min,
           "lr_bound": 2.0 * lr_gnorm_min / (torch.sqrt(torch.exp(g2_log_avg / debias)) + EPS)}
    active = k > cfg["curv_win_width"]
    new = {name: torch.where(active, value, t[name]) for name, value in new.items()}
    new["lr_smooth"] = lr_smooth
    return new


# ----------------------------------------------------------------------------------------------------------
# Per-parameter work, written twice: as per-tensor expressions (run eagerly, on cache-sized slices, or compiled
# into one loop per tensor by the fused CPU path) and as torch._foreach_* code (the GPU form).
#
# Both averages are kept as a global scalar times a tensor, a = scale * A, so that an EMA
# a <- keep * a + weight * g is a single lerp over memory instead of a multiply and an add:
#     scale' = keep * scale + weight,  A <- lerp(A, g, weight / scale')
# (then scale' * A' = keep * scale * A + weight * g exactly). scale stays positive and bounded: it starts at 1,
# keep >= 0 and weight > 0 on an applied step, keep = 1 and weight = 0 on a skipped one, and it tends to
# weight / (1 - keep).
#
# The per-tensor form reads each tensor twice per step. Pass 1 sums g.g, A.A and A.g (A the scaled gbar): g.g
# gives ||g|| for the clip, and once the clip has fixed the lerp weight w,
#     ||lerp(A, g, w)||^2 = (1 - w)^2 A.A + 2 w (1 - w) A.g + w^2 g.g
# gives the new gbar's norm without touching memory again (the expansion is formed in float64). Pass 2 updates
# gbar and takes the momentum step together (reads p, g, A, B; writes A, B, p). A skipped step's gradient is
# read as 0 (NaN * 0 would be NaN), never written: ``.grad`` is left as it was on every path.


def rescaled_ema(scale: torch.Tensor, keep: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(new scale, lerp weight) for a <- keep * a + weight * g on a = scale * A."""
    new_scale = keep * scale + weight
    return new_scale, weight / new_scale


def yf_sums_tensor(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Pass 1 of one tensor: (g.g, A.A, A.g)."""
    g, a = g.reshape(-1), a.reshape(-1)
    return torch.stack([torch.dot(g, g), torch.dot(a, a), torch.dot(a, g)])


def yf_update_tensor(p: torch.Tensor, g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, ok: torch.Tensor,
                     avg_weight: torch.Tensor, lerp_weight: torch.Tensor, decay: torch.Tensor | None,
                     neg_step: torch.Tensor) -> None:
    """Pass 2 of one tensor: A <- lerp(A, g, avg_weight); B <- lerp(B, g, lerp_weight) (+ decay * p), the scaled
    velocity; p <- p + neg_step * B."""
    g_ok = torch.where(ok, g, 0.0)
    a.lerp_(g_ok, avg_weight)
    b.lerp_(g_ok, lerp_weight)
    if decay is not None:
        b.addcmul_(p, decay)
    p.addcmul_(b, neg_step)


def _new_avg_sq(sums: torch.Tensor, ok: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """||lerp(A, g, w)||^2 from pass 1's sums (float64); a skipped step (w = 0) keeps A.A."""
    gg, aa, ag = sums.to(torch.float64).unbind()
    w = w.to(torch.float64)
    return torch.where(ok, (1.0 - w) ** 2 * aa + 2.0 * w * (1.0 - w) * ag + w * w * gg, aa)


def _squared_norm_foreach(tensors: list[torch.Tensor]) -> torch.Tensor:
    norms = torch.stack(torch._foreach_norm(tensors)).double()
    return torch.dot(norms, norms)


def _average_foreach(grads: list[torch.Tensor], avgs: list[torch.Tensor], avg_weight: torch.Tensor) -> torch.Tensor:
    """A <- lerp(A, g, avg_weight) (g already read as 0 on a skip); returns ||A||^2 (float64)."""
    torch._foreach_lerp_(avgs, grads, [avg_weight] * len(grads))
    return _squared_norm_foreach(avgs)


def _momentum_foreach(params, grads, bufs, *, lerp_weight, decay, neg_step) -> None:
    """``yf_update_tensor``'s momentum step on one bucket."""
    n = len(params)
    torch._foreach_lerp_(bufs, grads, [lerp_weight] * n)
    if decay is not None:
        torch._foreach_addcmul_(bufs, params, [decay] * n)
    torch._foreach_addcmul_(params, bufs, [neg_step] * n)


class YFOptimizer(PaperOptimizer):
    """YellowFin: momentum SGD with lr and momentum tuned every step (REFERENCE.md section 5).

    Args (the reference PyTorch constructor and its defaults, plus the options below):
        lr, mu: learning rate and momentum of the first step only; afterwards the tuner sets both.
        clip_thresh: if set, the global gradient norm is clipped to it before anything else.
        weight_decay: coupled L2 added to the gradient of the momentum SGD step (not to the statistics).
        beta: decay of every EMA of the tuner. curv_win_width: window of the curvature range (step 3).
        zero_debias, h_min_log_smooth, h_max_log_smooth: as in the reference.
        adapt_clip: the tuner's data-driven clips: adaptive norm clip to sqrt(stat_protect_fac * h_max) + eps
            (step 1), exploding-gradient clip (step 8) and the catastrophic-move guard lr * |g| <
            catastrophic_move_thresh (step 7).
        sparsity_debias: scale h_min, h_max and C by the smoothed fraction s of non-zero gradient entries and D
            by 1 / sqrt(s) (for sparse models, e.g. word embeddings; see ``_sparsity_debias``).
        delta_mu: added to the tuned momentum of the SGD step (clamped to [0, 0.999]), as the reference
            TensorFlow YellowFin does; the reference PyTorch YellowFin accepts it and ignores it (same default 0).
        auto_clip_fac: without clip_thresh, clip the global gradient norm to auto_clip_fac * sqrt(h_max) from the
            second step on (None: off).
        force_non_inc_step: after curv_win_width updates, bound the lr by twice the smallest smoothed |lr * g|
            over the smoothed |g| (``_non_increasing_step``); until then the lr stays the constructor's, and the
            catastrophic-move guard is off, as in the reference.
        lr_factor: multiplier of the tuned lr; the configured lr schedule scales it (``set_lr_factor``).
            weight_decay and lr_factor may differ per parameter group; the tuner is one for all groups.
        closed_loop, feedback_gain: closed-loop YellowFin: the momentum SGD uses mu_alg = mu + correction in [0, 1),
            correction <- correction + feedback_gain * (mu - mu_hat), mu_hat the measured total momentum (see
            ``_measure_momentum``; ``attach_gradient_delay`` for how mu_hat sees simulated asynchrony). Open
            loop measures and reports mu_hat as well, without feeding it back.
        log_stats: ``extras()`` also reports h_min, h_max, C, D and the count of skipped steps.
        foreach, fused: the code path of the per-parameter passes: multi-tensor (foreach=True), per-tensor
            (foreach=False), or compiled CPU kernels (fused=True, optim/_fused.py). None, None picks the
            multi-tensor path off the CPU, and on it the fused kernels where compiling pays off, else the
            per-tensor one. Every path reads a skipped step's gradient as 0 and leaves ``.grad`` as it was.

    The reference wraps ``torch.optim.SGD``, which keeps no momentum buffer while the momentum is 0 and creates
    it, on the first step with a non-zero momentum, as a copy of that step's update direction. With the default
    mu = 0 the first step's gradient therefore never enters the velocity: the velocity starts at the second step
    as that step's gradient alone (v_1 = g_1, not mu_1 g_0 + g_1). This class does the same (tuner scalar
    ``started``: whether the velocity exists; until it does the velocity's decay is 0).
    """

    has_fused = sliceable = True

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
        stat_protect_fac: float = 100.0,
        catastrophic_move_thresh: float = 100.0,
        sparsity_debias: bool = False,
        delta_mu: float = 0.0,
        auto_clip_fac: float | None = None,
        force_non_inc_step: bool = False,
        lr_factor: float = 1.0,
        closed_loop: bool = False,
        feedback_gain: float = 0.01,
        log_stats: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        cfg = dict(lr=lr, mu=mu, clip_thresh=clip_thresh, beta=beta, curv_win_width=curv_win_width,
                   zero_debias=bool(zero_debias), h_min_log_smooth=bool(h_min_log_smooth),
                   h_max_log_smooth=bool(h_max_log_smooth), adapt_clip=bool(adapt_clip),
                   stat_protect_fac=stat_protect_fac, catastrophic_move_thresh=catastrophic_move_thresh,
                   sparsity_debias=sparsity_debias, delta_mu=delta_mu, auto_clip_fac=auto_clip_fac,
                   force_non_inc_step=force_non_inc_step, closed_loop=bool(closed_loop), feedback_gain=feedback_gain)
        _check_arguments(cfg, weight_decay=weight_decay, lr_factor=lr_factor)
        defaults = dict(lr=lr, momentum=mu, weight_decay=weight_decay, lr_factor=lr_factor)
        super().__init__(params, defaults, foreach=foreach, fused=fused)
        for name in ("lr", "mu", "beta", "stat_protect_fac", "catastrophic_move_thresh", "delta_mu", "feedback_gain"):
            cfg[name] = float(cfg[name])
        self._cfg = cfg
        self.log_stats = bool(log_stats)
        self.tuner: dict[str, torch.Tensor] = {}
        self._gradient_delay = None

    # ---------------------------------------------------------------- trainer protocol
    def set_lr_factor(self, factor: float) -> None:
        """Schedules scale the tuned lr: lr_factor = (the group's constructor lr_factor) * factor."""
        for group in self.param_groups:
            group.setdefault("initial_lr_factor", group["lr_factor"])
            group["lr_factor"] = group["initial_lr_factor"] * float(factor)

    def extras(self) -> dict[str, float | torch.Tensor]:
        """Tuned momentum ``mu``, the measured total momentum ``mu_hat`` and ``mu_gap`` = mu_hat - mu (what the
        closed loop drives to zero; closed loop adds ``mu_alg``); log_stats adds h_min, h_max, C, D, ``skipped``,
        the bound ((sqrt(h_max/h_min) - 1) / (sqrt(h_max/h_min) + 1))^2 as ``mu_lower_bound`` and
        ``mu_over_lower_bound`` (1 where the bound, not the variance, sets mu). 0-d tensors on the device, so
        logging them needs no host sync; the lr is in param_groups."""
        names = ["mu", "mu_alg", "mu_hat"] if self._cfg["closed_loop"] else ["mu", "mu_hat"]
        if self.log_stats:
            names += ["h_min", "h_max", "C", "D", "skipped"]
        if not self.tuner:  # before the first step
            initial = {"mu": self._cfg["mu"], "mu_alg": self._cfg["mu"], "mu_hat": self._cfg["mu"]}
            out = {name: initial.get(name, 0.0) for name in names}
            out["mu_gap"] = 0.0
            return out | ({"mu_lower_bound": 0.0, "mu_over_lower_bound": math.nan} if self.log_stats else {})
        out = {name: self.tuner[name] for name in names}
        out["mu_gap"] = self.tuner["mu_hat"] - self.tuner["mu"]
        if self.log_stats:
            out["mu_lower_bound"] = momentum_lower_bound(self.tuner["h_min"], self.tuner["h_max"])
            out["mu_over_lower_bound"] = self.tuner["mu"] / out["mu_lower_bound"]
        return out

    def attach_gradient_delay(self, delay) -> None:
        """Simulated asynchrony (optbench.staleness.DelayedGradients): measure mu_hat against the gradient
        computed at the current iterate (``delay.fresh_grad(p)``) while the step applies the stale one in
        ``p.grad`` (open loop reports it, closed loop also steers with it).

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
        names = _TUNER_SCALARS + _SPARSITY_SCALARS * self._cfg["sparsity_debias"] \
            + _NON_INCREASING_SCALARS * self._cfg["force_non_inc_step"]
        self.tuner = {name: zero for name in names}
        self.tuner["lr"] = torch.full_like(zero, self._cfg["lr"])
        self.tuner["mu"] = torch.full_like(zero, self._cfg["mu"])
        if self._cfg["force_non_inc_step"]:
            self.tuner["lr_smooth"] = self.tuner["lr"]
            self.tuner["lr_gnorm_min"] = self.tuner["lr_bound"] = torch.full_like(zero, math.inf)
        self.tuner["window"] = torch.zeros(self._cfg["curv_win_width"], device=device, dtype=dtype)
        self.tuner["grad_avg_scale"] = self.tuner["velocity_scale"] = torch.ones_like(zero)
        self.tuner["mu_alg"] = self.tuner["mu_hat"] = self.tuner["mu"]
        self.tuner["mu_correction"] = zero

    def init_state(self, param: torch.Tensor, group: dict) -> dict:
        return {"scaled_grad_avg": zeros_state(param), "scaled_velocity": zeros_state(param)}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["tuner"] = dict(self.tuner)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        tuner = state_dict.pop("tuner", {})
        super().load_state_dict(state_dict)
        device = self.param_groups[0]["params"][0].device
        self.tuner = {k: v.to(device) for k, v in tuner.items()}
        if self.tuner and "started" not in self.tuner:  # written before ``started`` existed: velocity from step 1
            self.tuner["started"] = (self.tuner["step"] >= 1).to(self.tuner["step"].dtype)

    # ---------------------------------------------------------------- step
    def update(self, buckets: list[Bucket]) -> None:
        """Steps 1-8 over all buckets: one global gradient norm and one tuner for every group."""
        if not self.tuner:
            wide = any(b.work[0].dtype == torch.float64 for b in buckets)
            self._init_tuner(buckets[0].work[0].device, torch.float64 if wide else torch.float32)
        t, previous = self.tuner, dict(self.tuner)
        # 1. global gradient norm (a non-finite one: skip the step), clipping
        sums = [self._gradient_sums(b) for b in buckets]
        raw_norm = torch.sqrt(sum(s[0].to(t["g2_avg"].device, torch.float64) for s in sums)).to(t["g2_avg"].dtype)
        ok = torch.isfinite(raw_norm)
        clip, explode_clip, g2 = _clip_factors(torch.where(ok, raw_norm, 0.0), t["step"], t["h_max"], self._cfg)
        applied = ok.to(raw_norm.dtype)  # 0 on a skip: multiplies everything a skipped step must not add
        grads = [[torch.where(ok, g, 0.0) for g in b.grads] if b.path == "foreach" else b.grads for b in buckets]
        avg_weight = self._retune(previous, buckets, grads, sums, ok, clip * applied, g2)
        momentum, keep = self._momentum(previous, buckets, clip * explode_clip, ok)
        # 7-8. the momentum SGD step; the exploding-gradient clip (step 8) is folded into the gradient's weight
        t["velocity_scale"], velocity_weight = rescaled_ema(
            previous["velocity_scale"], torch.where(ok, keep, 1.0), clip * explode_clip * applied)
        steps = {id(b.group): self._group_step(b.group, g2, applied, ok, momentum) for b in buckets}
        for b, g in zip(buckets, grads):
            self._momentum_step(b, g, ok, avg_weight, velocity_weight, *steps[id(b.group)])
        self._keep_idle_averages(previous)

    def _retune(self, previous: dict, buckets: list[Bucket], grads: list, sums: list, ok: torch.Tensor,
                weight: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        """Steps 2-6: gbar <- beta gbar + weight g (weight = (1 - beta) * clip, 0 on a skip), sum ||gbar||^2, then
        the tuner's scalars (a skipped step keeps the old ones). Returns the gbar lerp weight."""
        t, beta = self.tuner, self._cfg["beta"]
        applied = ok.to(weight.dtype)
        t["grad_avg_scale"], avg_weight = rescaled_ema(
            previous["grad_avg_scale"], 1.0 - (1.0 - beta) * applied, (1.0 - beta) * weight)
        scaled_sq = sum(self._averaged_norm_sq(b, g, s, ok, avg_weight).to(weight.device)
                        for b, g, s in zip(buckets, grads, sums)).to(weight.dtype)
        nonzero = _nonzero_fraction(buckets, weight) if self._cfg["sparsity_debias"] else None
        for name, value in _tune(previous, g2, t["grad_avg_scale"] ** 2 * scaled_sq, self._cfg, nonzero).items():
            t[name] = torch.where(ok, value, previous[name])
        t["step"] = previous["step"] + applied
        t["skipped"] = previous["skipped"] + (1.0 - applied)
        return avg_weight

    def _gradient_sums(self, b: Bucket) -> torch.Tensor:
        """Pass 1: (g.g, A.A, A.g) over the bucket (the multi-tensor form computes g.g alone)."""
        if b.path == "foreach":
            return _squared_norm_foreach(b.grads).reshape(1)
        avgs = [s["scaled_grad_avg"] for s in b.states]
        return self.run_kernel(yf_sums_tensor, b, [b.grads, avgs], {}, {}, {})

    def _averaged_norm_sq(self, b: Bucket, grads: list, sums: torch.Tensor, ok: torch.Tensor,
                          avg_weight: torch.Tensor) -> torch.Tensor:
        """sum ||A'||^2 of the bucket after this step's gbar update (which the multi-tensor form makes now, the
        per-tensor form in pass 2)."""
        if b.path == "foreach":
            return _average_foreach(grads, [s["scaled_grad_avg"] for s in b.states], _like(avg_weight, b))
        return _new_avg_sq(sums, ok.to(sums.device), _like(avg_weight, b))

    def _group_step(self, group: dict, g2: torch.Tensor, applied: torch.Tensor, ok: torch.Tensor,
                    momentum: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Step 7 for one group: its lr (``_group_lr``) and its (decay, -lr) in the units of the scaled velocity.
        Records the group's lr and momentum."""
        t = self.tuner
        lr = self._group_lr(group, g2)
        decay = group["weight_decay"] * applied / t["velocity_scale"] if group["weight_decay"] != 0 else None
        group["lr"] = _keep_on_skip(ok, lr, group["lr"])
        group["momentum"] = _keep_on_skip(ok, momentum, group["momentum"])
        return decay, -lr * applied * t["velocity_scale"]

    def _group_lr(self, group: dict, g2: torch.Tensor) -> torch.Tensor:
        """The tuned lr * lr_factor with the catastrophic-move guard (adapt_clip): a move lr * |g| of at least
        catastrophic_move_thresh gets lr = catastrophic_move_thresh / sqrt(g2 + eps). With force_non_inc_step
        instead (as in the reference, which then skips the guard): the group's previous lr (at first the
        constructor's, without lr_factor) until step curv_win_width, then min(lr_smooth * lr_factor, lr_bound)."""
        t, cfg = self.tuner, self._cfg
        if cfg["force_non_inc_step"]:
            bounded = torch.minimum(t["lr_smooth"] * group["lr_factor"], t["lr_bound"])
            active = t["step"] > cfg["curv_win_width"] + 1  # after this step's update: k > curv_win_width
            return torch.where(active, bounded, group["lr"])
        lr = t["lr"] * group["lr_factor"]
        if cfg["adapt_clip"]:
            threshold = cfg["catastrophic_move_thresh"]
            lr = torch.where(lr * torch.sqrt(g2) >= threshold, threshold / torch.sqrt(g2 + EPS), lr)
        return lr

    def _momentum_step(self, b: Bucket, grads: list, ok: torch.Tensor, avg_weight: torch.Tensor,
                       velocity_weight: torch.Tensor, decay: torch.Tensor | None, neg_step: torch.Tensor) -> None:
        bufs = [s["scaled_velocity"] for s in b.states]
        values = dict(lerp_weight=_like(velocity_weight, b), decay=None if decay is None else _like(decay, b),
                      neg_step=_like(neg_step, b))
        if b.path == "foreach":
            _momentum_foreach(b.work, grads, bufs, **values)
            return
        avgs = [s["scaled_grad_avg"] for s in b.states]
        values.update(ok=ok.to(b.work[0].device), avg_weight=_like(avg_weight, b))
        self.run_kernel(yf_update_tensor, b, [b.work, grads, avgs, bufs], {}, values, {})

    def _keep_idle_averages(self, previous: dict) -> None:
        """Parameters without a gradient keep their averages: undo the shared scales' change."""
        t = self.tuner
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if p.grad is None and state:
                    state["scaled_grad_avg"].mul_((previous["grad_avg_scale"] / t["grad_avg_scale"]).to(p.device))
                    state["scaled_velocity"].mul_((previous["velocity_scale"] / t["velocity_scale"]).to(p.device))

    def _momentum(self, previous: dict, buckets: list, grad_scale: torch.Tensor, ok: torch.Tensor):
        """(momentum of the SGD step, the velocity's decay this step). The momentum is the tuned mu, plus delta_mu
        and (closed loop) the feedback correction, then clamped to [0, 0.999]; the decay is that momentum once
        the velocity exists, else 0 (the reference's SGD quirk, see the class docstring). Measures mu_hat (a step
        that starts the velocity has no momentum to measure) and, closed loop, feeds it back:
        correction <- correction + gain * (mu - mu_hat). While the tuner's mu stays put this is the paper's
        mu_alg <- mu_alg + gain * (mu - mu_hat); a moving mu is fed forward instead of being followed 1 / gain
        steps late (the correction only has to learn the momentum that asynchrony adds)."""
        t, cfg = self.tuner, self._cfg
        momentum = t["mu"]
        if cfg["closed_loop"] or cfg["delta_mu"] != 0:
            momentum = torch.clamp(momentum + cfg["delta_mu"] + previous["mu_correction"], 0.0, 0.999)
        keep = momentum * previous["started"]
        t["started"] = torch.where(ok & (momentum != 0), 1.0, previous["started"])
        mu_hat = keep + self._measure_momentum(previous, buckets, grad_scale)
        measured = ok & (previous["started"] > 0)
        t["mu_hat"] = torch.where(measured, mu_hat, previous["mu_hat"])
        if cfg["closed_loop"]:
            correction = previous["mu_correction"] + cfg["feedback_gain"] * (t["mu"] - mu_hat)
            t["mu_correction"] = torch.where(measured, correction.clamp(-1.0, 1.0), previous["mu_correction"])
            t["mu_alg"] = torch.where(ok, momentum, previous["mu_alg"])
        return momentum, keep

    def _measure_momentum(self, previous: dict, buckets: list, grad_scale: torch.Tensor) -> torch.Tensor:
        """mu_hat - mu_applied: what simulated asynchrony adds to the momentum of the iterates (0 without a
        gradient delay attached).

        mu_hat is REFERENCE.md's estimator, the median over coordinates of
        (x_{t+1} - x_t + lr u(x_t)) / (x_t - x_{t-1}), u(x_t) the update direction from the gradient at x_t. It needs
        no stored iterate: with x_t - x_{t-1} = -lr_{t-1} v and x_{t+1} - x_t = -lr_t (mu v + u_applied) it is
        (lr_t / lr_{t-1}) (mu + c (g_applied - g_fresh) / v), c the gradient's clip factor (> 0, so it leaves
        the median). We drop lr_t / lr_{t-1}: momentum is measured per unit of lr (on the velocity that mu
        multiplies), so the tuner's own lr changes (slow start, lr_factor) are not read as momentum. Synchronous
        training gives mu_hat = mu exactly. Cost, only with a gradient delay attached: a float32 temporary the
        size of the model and a median over it.
        """
        shift = torch.zeros_like(grad_scale)
        if self._gradient_delay is None:
            return shift
        ratios = []
        for b in buckets:
            for p, g, state in zip(b.params, b.grads, b.states):
                fresh = self._gradient_delay.fresh_grad(p)
                if fresh is not None and fresh is not p.grad:
                    v = state["scaled_velocity"]  # v / velocity_scale
                    ratios.append(((g.float() - fresh.float()) / v.float()).flatten().to(shift.device))
        if ratios:  # 0 / 0 (a coordinate that never moved) is NaN, which nanmedian ignores
            median = torch.nanmedian(torch.cat(ratios)).to(shift.dtype) / previous["velocity_scale"]
            shift = torch.where(torch.isfinite(median), grad_scale * median, shift)
        return shift


def _check_arguments(cfg: dict, weight_decay: float, lr_factor: float) -> None:
    """The constructor's ranges, with errors naming the argument."""
    check_positive("lr", cfg["lr"])
    check_unit_interval("mu", cfg["mu"])
    for name in ("clip_thresh", "auto_clip_fac"):
        if cfg[name] is not None:
            check_positive(name, cfg[name])
    check_positive("weight_decay", weight_decay, allow_zero=True)
    check_unit_interval("beta", cfg["beta"])
    width = cfg["curv_win_width"]
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"curv_win_width must be an integer >= 1, got {width!r}")
    check_positive("stat_protect_fac", cfg["stat_protect_fac"])
    check_positive("catastrophic_move_thresh", cfg["catastrophic_move_thresh"])
    check_flag("sparsity_debias", cfg["sparsity_debias"])
    check_flag("force_non_inc_step", cfg["force_non_inc_step"])
    delta_mu = cfg["delta_mu"]
    if isinstance(delta_mu, bool) or not isinstance(delta_mu, Real) or not -1.0 < delta_mu < 1.0:
        raise ValueError(f"delta_mu must be a number in (-1, 1), got {delta_mu!r}")
    check_positive("lr_factor", lr_factor, allow_zero=True)
    check_positive("feedback_gain", cfg["feedback_gain"], allow_zero=True)


def _nonzero_fraction(buckets: list[Bucket], like: torch.Tensor) -> torch.Tensor:
    """sparsity_debias: the fraction of non-zero entries over every gradient of the step (a clip scales it but
    zeroes nothing, so the raw gradients are counted)."""
    counts = [torch.count_nonzero(g).to(like.device, like.dtype) for b in buckets for g in b.grads]
    return torch.stack(counts).sum() / sum(g.numel() for b in buckets for g in b.grads)


def _like(scalar: torch.Tensor, b: Bucket) -> torch.Tensor:
    """A tuner scalar on the bucket's device in its working dtype (lerp wants its weight in that dtype)."""
    return scalar.to(device=b.work[0].device, dtype=b.work[0].dtype)


def _keep_on_skip(ok: torch.Tensor, new: torch.Tensor, old: Any) -> torch.Tensor:
    return torch.where(ok, new, old) if torch.is_tensor(old) else new


def _clip_factors(norm: torch.Tensor, k: torch.Tensor, h_max_prev: torch.Tensor, cfg: dict):
    """Steps 1, 2 and 8: the clip factor of the gradient the statistics see, the extra factor of the exploding-
    gradient clip (applied to the momentum step only), and g2, the squared norm after clipping."""
    clip = torch.ones_like(norm)
    if cfg["clip_thresh"] is not None:
        clip = clip_coefficient(norm, cfg["clip_thresh"])
    elif cfg["auto_clip_fac"] is not None:  # the reference: only without clip_thresh, not on the first step
        clip = torch.where(k >= 1, clip_coefficient(norm, torch.sqrt(h_max_prev) * cfg["auto_clip_fac"]), clip)
    explode_clip = torch.ones_like(norm)
    if cfg["adapt_clip"]:
        adaptive = clip_coefficient(norm * clip, torch.sqrt(cfg["stat_protect_fac"] * h_max_prev) + EPS)
        clip = torch.where(k > 1, clip * adaptive, clip)
    g2 = (norm * clip) ** 2
    if cfg["adapt_clip"]:
        exploding = (k >= 1) & (g2 >= h_max_prev)
        explode_clip = torch.where(exploding, clip_coefficient(norm * clip, torch.sqrt(h_max_prev) + EPS), 1.0)
    return clip, explode_clip, g2
