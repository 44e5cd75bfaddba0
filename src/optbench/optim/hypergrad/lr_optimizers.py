"""Learning-rate optimizers ("lop") of the hypergradient family: one step on the scalar alpha given the
hypergradient h_t = -g_t . d_{t-1} (REFERENCE.md sec. 3, "Learning-rate optimisers"). beta is hypergrad_lr.

alpha, h and the state are 0-dim tensors on the device; every update is out of place, so a state_dict taken
earlier is never changed by later steps. At t = 1 the caller passes h = 0: the moments stay zero but t counts
it, so the first real update (model step 2) uses t = 2 in Adam's bias corrections.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


class LrOptimizer:
    name: str

    def init_state(self, like: Tensor) -> dict:
        return {}

    def update(self, alpha: Tensor, h: Tensor, beta: float, state: dict) -> Tensor:
        """alpha_t from alpha_{t-1}; may replace entries of ``state``."""
        raise NotImplementedError


class SGDLr(LrOptimizer):
    """SGDlop (the paper's hypergradient descent): alpha_t = alpha_{t-1} - beta h_t."""

    name = "sgd"

    def update(self, alpha, h, beta, state):
        return alpha - beta * h


class SGDNLr(LrOptimizer):
    """SGDNlop: v_t = mu_h v_{t-1} + h_t;  alpha_t = alpha_{t-1} - beta (h_t + mu_h v_t)."""

    name = "sgdn"

    def __init__(self, momentum: float):
        self.momentum = momentum

    def init_state(self, like):
        return {"momentum_buffer": torch.zeros_like(like)}

    def update(self, alpha, h, beta, state):
        v = state["momentum_buffer"] = self.momentum * state["momentum_buffer"].to(h) + h
        return alpha - beta * (h + self.momentum * v)


class AdamLr(LrOptimizer):
    """Adamlop: m_t = b1 m + (1 - b1) h,  v_t = b2 v + (1 - b2) h^2,
    alpha_t = alpha_{t-1} - beta sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)  (eps as in Adam above)."""

    name = "adam"

    def __init__(self, betas: tuple[float, float], eps: float):
        self.betas, self.eps = betas, eps

    def init_state(self, like):
        return {"step": 0, "exp_avg": torch.zeros_like(like), "exp_avg_sq": torch.zeros_like(like)}

    def update(self, alpha, h, beta, state):
        b1, b2 = self.betas
        t = state["step"] = state["step"] + 1
        m = state["exp_avg"] = b1 * state["exp_avg"].to(h) + (1.0 - b1) * h
        v = state["exp_avg_sq"] = b2 * state["exp_avg_sq"].to(h) + (1.0 - b2) * h * h
        correction = math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        return alpha - beta * correction * m / (v.sqrt() + self.eps)


def build_lr_optimizer(name: str, momentum: float, betas: tuple[float, float], eps: float) -> LrOptimizer:
    if name == "sgd":
        return SGDLr()
    if name == "sgdn":
        return SGDNLr(momentum)
    if name == "adam":
        return AdamLr(betas, eps)
    raise ValueError(f"lr_opt must be one of {', '.join(map(repr, LR_OPTIMIZERS))}, got {name!r}")


LR_OPTIMIZERS = ("sgd", "sgdn", "adam")
