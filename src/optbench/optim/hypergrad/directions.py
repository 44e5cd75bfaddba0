"""Model optimizers of the hypergradient family (REFERENCE.md sec. 3, "Model optimisers").

Each one turns the gradient g_t (weight decay already added) into the direction d_t of

    p_t = p_{t-1} - alpha_t * d_t

and keeps d_t, because the next step's hypergradient is h_{t+1} = -g_{t+1} . d_t. Each has a per-tensor form
(``step_single``) and a multi-tensor form (``step_multi``, ``torch._foreach_*`` on one (device, dtype) bucket)
that run the same operations in the same order, so on the CPU the two paths agree bit for bit.

``scale`` is -alpha_t as a 0-dim tensor of the bucket's device and dtype; ``owned`` says the gradients are
temporaries of this step (weight decay or a float32 working copy made them) that a direction may keep.

The two forms are tuned for different hardware. The per-tensor form writes into last step's buffers
(``out=``) and allocates nothing, which is what matters on the CPU. The multi-tensor form lets the foreach
kernels allocate their results, which on an accelerator come from the caching allocator for free.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from optbench.optim._base import adam_moments_foreach_, add_scaled_
from optbench.optim._checks import check_betas, check_positive, check_unit_interval

Tensor = torch.Tensor


class Direction:
    """Interface. ``hyperparameters``: the per-group keys this model optimizer reads."""

    name: str
    hyperparameters: tuple[str, ...] = ()

    def check(self, group: dict[str, Any]) -> None:
        """Raise ValueError naming the first hyperparameter of ``group`` outside its range."""

    def previous(self, state: dict, group: dict) -> tuple[Tensor, float] | None:
        """d_{t-1} as (tensor, factor) with d_{t-1} = factor * tensor; None before the parameter's first step."""
        d = state.get("direction")
        return None if d is None else (d, 1.0)

    def step_single(self, group: dict, p: Tensor, g: Tensor, state: dict, scale: Tensor, owned: bool) -> None:
        raise NotImplementedError

    def step_multi(self, group: dict, params: list[Tensor], grads: list[Tensor], states: list[dict],
                   scale: Tensor, owned: bool) -> None:
        raise NotImplementedError


class SGD(Direction):
    """SGD: d_t = g_t."""

    name = "sgd"

    def step_single(self, group, p, g, state, scale, owned):
        state["direction"] = _keep(g, state.get("direction"), owned)
        p.addcmul_(state["direction"], scale)

    def step_multi(self, group, params, grads, states, scale, owned):
        if owned:
            directions = grads
        else:
            old = [(s["direction"], g) for s, g in zip(states, grads) if "direction" in s]
            if old:
                torch._foreach_copy_([d for d, _ in old], [g for _, g in old])
            directions = [s["direction"] if "direction" in s else g.clone() for s, g in zip(states, grads)]
        for s, d in zip(states, directions):
            s["direction"] = d
        add_scaled_(params, directions, [scale] * len(params))


class _Momentum(Direction):
    """The momentum buffer of torch.optim.SGD: buf_1 = g_1, then buf_t = mu buf_{t-1} + (1 - dampening) g_t."""

    hyperparameters = ("momentum", "dampening")

    def check(self, group):
        check_unit_interval("momentum", group["momentum"])
        check_unit_interval("dampening", group["dampening"], closed=True)

    @staticmethod
    def _buffer_single(group, g, state, owned) -> Tensor:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = g if owned else g.clone()
        else:
            buf.mul_(group["momentum"]).add_(g, alpha=1.0 - group["dampening"])
        return buf

    @staticmethod
    def _buffers_multi(group, grads, states, owned) -> list[Tensor]:
        old = [(s["momentum_buffer"], g) for s, g in zip(states, grads) if "momentum_buffer" in s]
        if old:
            bufs = [b for b, _ in old]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, [g for _, g in old], alpha=1.0 - group["dampening"])
        for s, g in zip(states, grads):
            if "momentum_buffer" not in s:
                s["momentum_buffer"] = g if owned else g.clone()
        return [s["momentum_buffer"] for s in states]


class SGDMomentum(_Momentum):
    """Classical (heavy-ball) momentum: d_t = buf_t. Not one of the paper's three; SGDHD(momentum > 0,
    nesterov=False) needs it. Its d_{t-1} is the buffer itself, read before this step updates it."""

    name = "sgdm"

    def previous(self, state, group):
        buf = state.get("momentum_buffer")
        return None if buf is None else (buf, 1.0)

    def step_single(self, group, p, g, state, scale, owned):
        buf = self._buffer_single(group, g, state, owned)
        p.addcmul_(buf, scale)

    def step_multi(self, group, params, grads, states, scale, owned):
        bufs = self._buffers_multi(group, grads, states, owned)
        add_scaled_(params, bufs, [scale] * len(params))


class SGDNesterov(_Momentum):
    """SGDN, PyTorch's Nesterov convention: d_t = g_t + mu buf_t."""

    name = "sgdn"

    def check(self, group):
        super().check(group)
        if group["dampening"] != 0:
            raise ValueError(f"dampening must be 0 for Nesterov momentum (as torch.optim.SGD), got "
                             f"{group['dampening']!r}")

    def step_single(self, group, p, g, state, scale, owned):
        buf = self._buffer_single(group, g, state, owned)
        d = state.get("direction")  # d_{t-1}: already used by h_t, so its memory takes d_t
        state["direction"] = torch.add(g, buf, alpha=group["momentum"], out=d) if d is not None \
            else g.add(buf, alpha=group["momentum"])
        p.addcmul_(state["direction"], scale)

    def step_multi(self, group, params, grads, states, scale, owned):
        bufs = self._buffers_multi(group, grads, states, owned)
        directions = torch._foreach_add(grads, bufs, alpha=group["momentum"])
        for s, d in zip(states, directions):
            s["direction"] = d
        add_scaled_(params, directions, [scale] * len(params))


class Adam(Direction):
    """Adam with the reference's eps placement (PyTorch's Adam of 2018):
        m_t = b1 m + (1 - b1) g,  v_t = b2 v + (1 - b2) g^2,  u_t = m_t / (sqrt(v_t) + eps),
        d_t = c_t u_t  with  c_t = sqrt(1 - b2^t) / (1 - b1^t)   (eps on the uncorrected sqrt(v)).
    u_t is stored; c_t is recomputed from the parameter's step count t when needed."""

    name = "adam"
    hyperparameters = ("betas", "eps")

    def check(self, group):
        check_betas("betas", group["betas"], length=2)
        check_positive("eps", group["eps"])

    @staticmethod
    def correction(group: dict, t: int) -> float:
        b1, b2 = group["betas"]
        return math.sqrt(1.0 - b2**t) / (1.0 - b1**t)

    def previous(self, state, group):
        u = state.get("direction")
        return None if u is None else (u, self.correction(group, state["step"]))

    @staticmethod
    def _init(p: Tensor, state: dict) -> None:
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def step_single(self, group, p, g, state, scale, owned):
        b1, b2 = group["betas"]
        self._init(p, state)
        state["step"] += 1
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, 1.0 - b1)
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        u = state.get("direction")  # u_{t-1}: already used by h_t, so its memory takes u_t
        u = state["direction"] = torch.sqrt(v, out=u) if u is not None else v.sqrt()
        torch.div(m, u.add_(group["eps"]), out=u)
        p.addcmul_(u, scale * self.correction(group, state["step"]))

    def step_multi(self, group, params, grads, states, scale, owned):
        b1, b2 = group["betas"]
        for p, state in zip(params, states):
            self._init(p, state)
            state["step"] += 1
        ms = [s["exp_avg"] for s in states]
        vs = [s["exp_avg_sq"] for s in states]
        adam_moments_foreach_(ms, vs, grads, b1, b2)
        denoms = torch._foreach_sqrt(vs)
        torch._foreach_add_(denoms, group["eps"])
        directions = torch._foreach_div(ms, denoms)
        scales: dict[int, Tensor] = {}  # one scale per distinct step count (usually one)
        for s, d in zip(states, directions):
            s["direction"] = d
            if s["step"] not in scales:
                scales[s["step"]] = scale * self.correction(group, s["step"])
        add_scaled_(params, directions, [scales[s["step"]] for s in states])


def _keep(g: Tensor, buffer: Tensor | None, owned: bool) -> Tensor:
    """g itself if it is this step's temporary, else a copy (into last step's buffer when there is one)."""
    if owned:
        return g
    return g.clone() if buffer is None else buffer.copy_(g)


MODEL_OPTIMIZERS: dict[str, type[Direction]] = {
    cls.name: cls for cls in (SGD, SGDMomentum, SGDNesterov, Adam)
}
