"""A test oracle: the official PyTorch YellowFin (github.com/JianGoForIt/YellowFin_Pytorch,
tuner_utils/yellowfin.py, the version with ``adapt_clip`` and ``catastrophic_move_thresh``) re-implemented from
reading its source, step for step and in its order of operations. It shares no code with optbench and runs
without the network (CI has none).

One ``step()`` of the reference, as reproduced here:
1. Clipping of the gradients with ``clip_grad_norm``'s rule (scale by max_norm / (norm + 1e-6) when that is
   below 1): to ``clip_thresh`` if set, else after the first step to ``auto_clip_fac * sqrt(h_max)`` if that is
   set; then, with ``adapt_clip`` from the third step on, to ``sqrt(stat_protect_fac * h_max) + eps`` (h_max of
   the previous step throughout).
2. Statistics (``before_apply``): g2 = the squared global norm; from the second step on an exploding gradient is
   g2 >= the previous h_max; EMA of g2; gradient sparsity (``sparsity_debias``); curvature range from a window
   of the last ``curv_win_width`` values of g2; gradient variance; distance to the optimum. From the second step
   on: the cubic's root by the reference's Vieta/Cardano formula, mu_t, lr_t with its slow start, and the
   smoothed lr that only ``force_non_inc_step`` reads.
3. Hyperparameters (``update_hyper_param``): momentum = mu_t; lr = lr_t * lr_factor with the catastrophic-move
   guard, or with ``force_non_inc_step`` the lr left as it was up to step ``curv_win_width`` and afterwards
   min(smoothed lr * lr_factor, twice the smallest smoothed |lr * g| over the smoothed |g|).
4. The exploding-gradient clip to sqrt(previous h_max) + eps.
5. The wrapped ``torch.optim.SGD(momentum=..., weight_decay=...)`` step, written out: direction d = g + wd * p;
   SGD keeps a momentum buffer only while momentum is non-zero, and creates it as a copy of d on the first such
   step: so the first step (momentum 0 by default) leaves no velocity behind, and the buffer starts one step
   later as that step's d alone. Then p -= lr * buffer.

Precision: Python numbers (float64) everywhere except what the reference declares float32: the curvature window
is a ``torch.FloatTensor`` (its entries, and log(entry + eps), are float32) and the variance accumulator is an
``np.float32`` array (each addition rounded to float32). Reductions return Python numbers, as torch.sum/min/max
did in the PyTorch of the reference's time.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

EPS = 1e-6
CLIP_GUARD = 1e-6  # clip_grad_norm's max_norm / (total_norm + 1e-6)


class OfficialYellowFin:
    """The reference's YFOptimizer (its defaults) over a list of parameters; ``step()`` reads their ``.grad``."""

    def __init__(self, params, lr=1e-4, mu=0.0, clip_thresh=None, weight_decay=0.0, beta=0.999, curv_win_width=20,
                 zero_debias=True, sparsity_debias=False, auto_clip_fac=None, force_non_inc_step=False,
                 h_max_log_smooth=True, h_min_log_smooth=True, adapt_clip=True, stat_protect_fac=100.0,
                 catastrophic_move_thresh=100.0):
        self.params = list(params)
        self.lr0, self.mu0, self.clip_thresh, self.wd = lr, mu, clip_thresh, weight_decay
        self.beta, self.width, self.zero_debias, self.sparsity_debias = beta, curv_win_width, zero_debias, sparsity_debias
        self.auto_clip_fac, self.force_non_inc_step = auto_clip_fac, force_non_inc_step
        self.log_max, self.log_min = h_max_log_smooth, h_min_log_smooth
        self.adapt_clip, self.stat_protect_fac, self.catastrophic = adapt_clip, stat_protect_fac, catastrophic_move_thresh
        self.lr_factor = 1.0
        self.k = 0  # the reference's self._iter
        self.lr_t, self.mu_t, self.lr_smooth = lr, mu, lr
        self.group_lr, self.momentum = lr, mu  # the wrapped SGD's param_group
        self.buffers = [None] * len(self.params)  # SGD's momentum_buffer
        self.grad_avg = [torch.zeros_like(p) for p in self.params]
        self.window = np.zeros(curv_win_width, dtype=np.float32)
        self.g2_avg = self.h_min_avg = self.h_max_avg = self.gnorm_avg = self.dist_avg = self.sparsity_avg = 0.0
        self.h_min = self.h_max = 0.0
        self.g2_log_avg = self.lr_gnorm_avg = None  # force_non_inc_step's averages, created on first use
        self.lr_gnorm_min = math.inf
        self.exploding = False
        self.events = Counter()  # which clips and guards acted, for the tests to check their coverage

    def set_lr_factor(self, factor: float) -> None:
        self.lr_factor = factor

    def debias(self) -> float:
        """zero_debias_factor(): 1 - beta^(iter + 1), also used where zero_debias is off (sparsity, lr bound)."""
        return 1.0 - self.beta ** (self.k + 1)

    # ------------------------------------------------------------------ 1. clipping
    def clip(self, grads: list[torch.Tensor], max_norm: float, event: str) -> list[torch.Tensor]:
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        coef = max_norm / (norm + CLIP_GUARD)
        if coef >= 1:
            return grads
        self.events[event] += 1
        return [g * coef for g in grads]

    def clip_before_statistics(self, grads):
        if self.clip_thresh is not None:
            grads = self.clip(grads, self.clip_thresh, "clip_thresh")
        elif self.k != 0 and self.auto_clip_fac is not None:
            grads = self.clip(grads, math.sqrt(self.h_max) * self.auto_clip_fac, "auto_clip")
        if self.adapt_clip and self.k > 1:
            grads = self.clip(grads, math.sqrt(self.stat_protect_fac * self.h_max) + EPS, "stat_protect")
        return grads

    # ------------------------------------------------------------------ 2. statistics
    def statistics(self, grads) -> None:
        b = self.beta
        self.g2 = sum(float((g * g).sum()) for g in grads)
        self.h_max_previous = self.h_max
        if self.k >= 1:
            self.exploding = self.g2 >= self.h_max
        self.g2_avg = self.g2_avg * b + (1 - b) * self.g2
        if self.sparsity_debias:
            nonzero = sum(int(torch.count_nonzero(g)) for g in grads)
            self.sparsity_avg = b * self.sparsity_avg + (1 - b) * nonzero / sum(g.numel() for g in grads)
            self.sparsity = self.sparsity_avg / self.debias()
        self.curvature_range()
        self.grad_variance(grads)
        self.dist_to_opt()
        if self.k > 0:
            self.mu_t = self.tuned_momentum()
            lr_t = (1.0 - math.sqrt(self.mu_t)) ** 2 / (self.h_min + EPS)
            self.lr_t = min(lr_t, lr_t * (self.k + 1) / (10.0 * self.width))
            self.lr_smooth = b * self.lr_smooth + (1 - b) * self.lr_t

    def curvature_range(self) -> None:
        b = self.beta
        self.window[self.k % self.width] = self.g2  # float32
        valid = self.window[: min(self.width, self.k + 1)]
        logs = np.log(valid + np.float32(EPS))  # float32
        self.h_min_avg = self.h_min_avg * b + (1 - b) * float(logs.min() if self.log_min else valid.min())
        self.h_max_avg = self.h_max_avg * b + (1 - b) * float(logs.max() if self.log_max else valid.max())
        d = self.debias() if self.zero_debias else 1.0
        self.h_min = math.exp(self.h_min_avg / d) if self.log_min else self.h_min_avg / d
        self.h_max = math.exp(self.h_max_avg / d) if self.log_max else self.h_max_avg / d
        if self.sparsity_debias:
            self.h_min *= self.sparsity
            self.h_max *= self.sparsity

    def grad_variance(self, grads) -> None:
        b = self.beta
        total = np.float32(0.0)
        for avg, g in zip(self.grad_avg, grads):
            avg.mul_(b).add_(g, alpha=1 - b)
            total = np.float32(total + float((avg * avg).sum()))
        d = self.debias() if self.zero_debias else 1.0
        total = np.float32(total / -(d**2))
        total = np.float32(total + self.g2_avg / d)
        self.C = max(float(total), EPS)
        if self.sparsity_debias:
            self.C *= self.sparsity

    def dist_to_opt(self) -> None:
        b = self.beta
        self.gnorm_avg = self.gnorm_avg * b + (1 - b) * math.sqrt(self.g2)
        self.dist_avg = self.dist_avg * b + (1 - b) * self.gnorm_avg / (self.g2_avg + EPS)
        self.D = self.dist_avg / self.debias() if self.zero_debias else self.dist_avg
        if self.sparsity_debias:
            self.D /= math.sqrt(self.sparsity) + EPS

    def tuned_momentum(self) -> float:
        """get_cubic_root + get_mu: the root of the cubic by Vieta's substitution, with the reference's eps."""
        p = (self.D + EPS) ** 2 * (self.h_min + EPS) ** 2 / 2 / (self.C + EPS)
        w3 = (-math.sqrt(p**2 + 4.0 / 27.0 * p**3) - p) / 2.0
        w = math.copysign(1.0, w3) * math.pow(math.fabs(w3), 1.0 / 3.0)
        x = w - p / 3.0 / (w + EPS) + 1
        dr = max((self.h_max + EPS) / (self.h_min + EPS), 1.0 + EPS)
        return max(x**2, ((math.sqrt(dr) - 1) / (math.sqrt(dr) + 1)) ** 2)

    # ------------------------------------------------------------------ 3. the SGD's lr and momentum
    def update_hyperparameters(self) -> None:
        self.momentum = self.mu_t
        if not self.force_non_inc_step:
            self.group_lr = self.lr_t * self.lr_factor
            if self.adapt_clip and self.group_lr * math.sqrt(self.g2) >= self.catastrophic:
                self.group_lr = self.catastrophic / math.sqrt(self.g2 + EPS)
                self.events["catastrophic_move"] += 1
        elif self.k > self.width:
            self.non_increasing_lr()

    def non_increasing_lr(self) -> None:
        b = self.beta
        self.g2_log_avg = (self.g2_log_avg or 0.0) * b + (1 - b) * math.log(self.g2 + EPS)
        self.lr_gnorm_avg = (self.lr_gnorm_avg or 0.0) * b + (1 - b) * math.log(
            self.lr_smooth * math.sqrt(self.g2) + EPS)
        self.lr_gnorm_min = min(self.lr_gnorm_min, math.exp(self.lr_gnorm_avg / self.debias()))
        bound = 2.0 * self.lr_gnorm_min / (math.sqrt(math.exp(self.g2_log_avg / self.debias())) + EPS)
        self.group_lr = min(self.lr_smooth * self.lr_factor, bound)
        self.events["lr_bound"] += bound < self.lr_smooth * self.lr_factor

    # ------------------------------------------------------------------ one step
    @torch.no_grad()
    def step(self) -> None:
        grads = self.clip_before_statistics([p.grad.detach().clone() for p in self.params])
        self.statistics(grads)
        self.update_hyperparameters()
        if self.adapt_clip and self.exploding:
            grads = self.clip(grads, math.sqrt(self.h_max_previous) + EPS, "exploding")
        self.sgd_step(grads)
        self.k += 1

    def sgd_step(self, grads) -> None:
        for i, (p, g) in enumerate(zip(self.params, grads)):
            d = g + self.wd * p if self.wd != 0 else g
            if self.momentum != 0:
                if self.buffers[i] is None:
                    self.buffers[i] = d.clone()
                else:
                    self.buffers[i].mul_(self.momentum).add_(d)
                d = self.buffers[i]
            p.add_(d, alpha=-self.group_lr)
