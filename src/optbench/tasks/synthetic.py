"""The papers' synthetic problems as tasks: each model holds the iterate as a parameter, so any optimizer trains
it through the ordinary trainer, and an "epoch" is ``steps_per_epoch`` online steps.

- ``reddi`` / ``reddi_stochastic`` (REFERENCE.md sec. 2; Reddi, Kale & Kumar 2018): the online linear problem
  f_t(x) = rare * x on rare steps, common * x otherwise, x projected onto [-1, 1] after every step. Rare steps:
  t mod period == 1 (deterministic) or probability rare_prob (stochastic). With rare = 1010, common = -10 the
  average slope is positive, so the optimum is x = -1, yet Adam drifts to +1.
- ``alt_quadratic`` (REFERENCE.md sec. 2, Expectigrad's test problem): f_t = 3 x0^2 on odd t, x0^2 + 8 x1^2 on
  even t, from (1, 1); x1 sees zero gradients on odd steps.
- ``quadratic_2d`` (AggMo's illustration of passive damping): the deterministic ill-conditioned quadratic
  f = (h0 x0^2 + h1 x1^2) / 2, whose iterates show classical momentum's oscillation and AggMo's damping.
- ``adamp_toy`` (REFERENCE.md sec. 4): the scale-invariant f(w) = -(w / |w|) . (w* / |w*|) in 2-D; momentum
  makes |w| grow, the projection of SGDP/AdamP does not.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from optbench.tasks.base import Task


class Iterate(nn.Module):
    """The optimised point of a synthetic problem, as a parameter named ``x``."""

    def __init__(self, start: Sequence[float], device: torch.device):
        super().__init__()
        self.x = nn.Parameter(torch.tensor(start, dtype=torch.float32, device=device))


class OnlineTask(Task):
    """Shared plumbing: one batch per online step, a step counter t (from 1) saved with the checkpoint."""

    def __init__(self, name: str, start: Sequence[float], steps_per_epoch: int, device: torch.device):
        if steps_per_epoch < 1:
            raise ValueError(f"task.steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.name = name
        self.model = Iterate(start, device)
        self._steps = steps_per_epoch
        self.t = 0  # online steps taken

    @property
    def x(self) -> nn.Parameter:
        return self.model.x

    def steps_per_epoch(self) -> int:
        return self._steps

    def train_batches(self, generator: torch.Generator) -> Iterator[Any]:
        for _ in range(self._steps):
            self.t += 1
            yield self.draw(self.t, generator)

    def draw(self, t: int, generator: torch.Generator) -> Any:
        """What defines f_t (the batch of step t)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])


class ReddiLinear(OnlineTask):
    """f_t(x) = slope_t * x on [-1, 1]. The logged loss is the regret-style gap of the average objective,
    F(x) - F(-1) = s (x + 1) with s the mean slope per step: 0 at the optimum x = -1, 2 s at the trap x = +1."""

    def __init__(self, name: str, rare: float, common: float, period: int | None, rare_prob: float | None,
                 start: float, steps_per_epoch: int, device: torch.device):
        super().__init__(name, [start], steps_per_epoch, device)
        if (period is None) == (rare_prob is None):
            raise ValueError("task: give exactly one of period (deterministic) or rare_prob (stochastic)")
        if period is not None and period < 2:
            raise ValueError(f"task.period must be >= 2, got {period}")
        if rare_prob is not None and not 0 < rare_prob < 1:
            raise ValueError(f"task.rare_prob must be in (0, 1), got {rare_prob}")
        self.rare, self.common, self.period, self.rare_prob = rare, common, period, rare_prob
        share = 1.0 / period if period is not None else rare_prob
        self.mean_slope = share * rare + (1.0 - share) * common
        if self.mean_slope <= 0:
            raise ValueError(f"task: the mean slope {self.mean_slope} must be > 0 (optimum x = -1)")

    def draw(self, t: int, generator: torch.Generator) -> float:
        if self.period is not None:
            return self.rare if t % self.period == 1 else self.common
        u = torch.rand((), generator=generator, device=generator.device).item()
        return self.rare if u < self.rare_prob else self.common

    def loss(self, batch: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return (batch * self.x).sum(), {}

    def after_step(self) -> None:
        with torch.no_grad():
            self.x.clamp_(-1.0, 1.0)

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        return {"loss": self.mean_slope * (float(self.x.detach()) + 1.0)}

    def extras(self) -> dict[str, float]:
        return {"x": float(self.x.detach())}


class AlternatingQuadratic(OnlineTask):
    """The logged loss is the average of the two alternating objectives, (f_odd + f_even) / 2 = 2 x0^2 + 4 x1^2."""

    def draw(self, t: int, generator: torch.Generator) -> bool:
        return t % 2 == 1

    def loss(self, odd: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0, x1 = self.x[0], self.x[1]
        return (3 * x0**2 if odd else x0**2 + 8 * x1**2), {}

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        x0, x1 = self.x.tolist()
        return {"loss": 2 * x0**2 + 4 * x1**2}

    def extras(self) -> dict[str, float]:
        x0, x1 = self.x.detach().tolist()
        return {"x0": x0, "x1": x1}


class Quadratic2D(OnlineTask):
    """f = (h0 x0^2 + h1 x1^2) / 2, the same every step; x0 and x1 are logged, so each epoch row is a point of
    the trajectory (use one step per epoch to draw every iterate)."""

    def __init__(self, name: str, curvatures: Sequence[float], start: Sequence[float], steps_per_epoch: int,
                 device: torch.device):
        super().__init__(name, start, steps_per_epoch, device)
        if len(curvatures) != 2 or min(curvatures) <= 0:
            raise ValueError(f"quadratic_2d: curvatures must be two positive numbers, got {list(curvatures)}")
        self.h = torch.tensor(curvatures, dtype=torch.float32, device=device)

    def draw(self, t: int, generator: torch.Generator) -> None:
        return None

    def loss(self, batch: None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return 0.5 * (self.h * self.x ** 2).sum(), {}

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        return {"loss": float(0.5 * (self.h * self.x ** 2).sum())}

    def extras(self) -> dict[str, float]:
        x0, x1 = self.x.detach().tolist()
        return {"x0": x0, "x1": x1}


class ScaleInvariantToy(OnlineTask):
    """f(w) = -cos(w, w*), so the gradient is orthogonal to w. w is stored as a 1 x 2 matrix (one output
    channel) so that AdamP/SGDP, which project only parameters with dim > 1, treat it as a layer weight."""

    def __init__(self, name: str, w_star: Sequence[float], start: Sequence[float], steps_per_epoch: int,
                 device: torch.device):
        super().__init__(name, [list(start)], steps_per_epoch, device)
        if len(w_star) != 2 or len(start) != 2:
            raise ValueError("adamp_toy: w_star and w0 must be 2-D")
        direction = torch.tensor(w_star, dtype=torch.float32, device=device)
        if direction.norm() == 0:
            raise ValueError("adamp_toy: w_star must be nonzero")
        self.direction = direction / direction.norm()

    def draw(self, t: int, generator: torch.Generator) -> None:
        return None

    def objective(self) -> torch.Tensor:
        w = self.x.view(-1)
        return -(w / w.norm()) @ self.direction

    def loss(self, batch: None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.objective(), {}

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        return {"loss": float(self.objective())}

    def extras(self) -> dict[str, float]:
        return {"weight_norm": float(self.x.detach().norm())}


def _common(cfg: Mapping) -> dict:
    return dict(name=str(cfg["name"]), steps_per_epoch=int(cfg["steps_per_epoch"]))


def build(cfg: Mapping, data_dir: str, device: torch.device) -> Task:
    """From a task config; the problems' constants live in their configs/task/*.yaml only."""
    kind = cfg["kind"]
    if kind in ("reddi", "reddi_stochastic"):
        stochastic = kind == "reddi_stochastic"
        return ReddiLinear(rare=float(cfg["rare"]), common=float(cfg["common"]),
                           period=None if stochastic else int(cfg["period"]),
                           rare_prob=float(cfg["rare_prob"]) if stochastic else None,
                           start=float(cfg["x0"]), device=device, **_common(cfg))
    if kind == "alt_quadratic":
        return AlternatingQuadratic(start=[float(v) for v in cfg["x0"]], device=device, **_common(cfg))
    if kind == "quadratic_2d":
        return Quadratic2D(curvatures=[float(v) for v in cfg["curvatures"]], start=[float(v) for v in cfg["x0"]],
                           device=device, **_common(cfg))
    if kind == "adamp_toy":
        return ScaleInvariantToy(w_star=[float(v) for v in cfg["w_star"]], start=[float(v) for v in cfg["w0"]],
                                 device=device, **_common(cfg))
    raise ValueError(f"task.kind={kind!r} is not a synthetic task (reddi, reddi_stochastic, alt_quadratic, "
                     "quadratic_2d, adamp_toy)")
