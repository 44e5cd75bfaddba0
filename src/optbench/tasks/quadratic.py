"""Noisy quadratic: f(x) = 1/2 sum_i h_i x_i^2 with curvatures h_i log-spaced over [h_min, h_max], observed
through stochastic gradients. A problem with a known answer (x* = 0, f* = 0) on which the tuning of lr and
momentum (YellowFin, asynchrony) can be checked in seconds.

Gradient noise: g = h * x + noise * sqrt(h / batch_size) * xi, xi ~ N(0, I) drawn from the trainer's generator.
The noise covariance is proportional to the curvature, as the noise of a mini-batch gradient is proportional
to the Fisher information (the noisy quadratic model of Zhang et al., NeurIPS 2019). The training loss of a
batch is 1/2 sum h x^2 + noise * sum sqrt(h / B) xi x, whose gradient is exactly g and whose mean is f(x).
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping

import torch
from torch import nn

from optbench.tasks.base import Task


class NoisyQuadratic(Task):
    def __init__(self, name: str, dim: int, h_min: float, h_max: float, noise: float, steps_per_epoch: int,
                 batch_size: int, init_scale: float, device: torch.device):
        if dim < 1 or steps_per_epoch < 1 or batch_size < 1:
            raise ValueError("noisy_quadratic: dim, steps_per_epoch and batch_size must be >= 1")
        if not 0 < h_min <= h_max or noise < 0:
            raise ValueError(f"noisy_quadratic: need 0 < h_min <= h_max and noise >= 0, got h_min={h_min}, "
                             f"h_max={h_max}, noise={noise}")
        self.name = name
        self.curvatures = torch.logspace(math.log10(h_min), math.log10(h_max), dim, device=device)
        self.noise_scale = noise * torch.sqrt(self.curvatures / batch_size)
        self._steps = steps_per_epoch
        self.model = nn.Module()
        self.model.x = nn.Parameter(torch.full((dim,), float(init_scale), device=device))

    def steps_per_epoch(self) -> int:
        return self._steps

    def objective(self) -> torch.Tensor:
        x = self.model.x
        return 0.5 * (self.curvatures * x * x).sum()

    def train_batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """One standard-normal draw per step (the gradient noise direction)."""
        dim = self.curvatures.numel()
        for _ in range(self._steps):
            xi = torch.randn(dim, generator=generator, device=generator.device)
            yield xi.to(self.curvatures.device)

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.objective() + (self.noise_scale * batch * self.model.x).sum(), {}

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        """The exact objective f(x) (every split: the problem has no data)."""
        return {"loss": float(self.objective())}


def build(cfg: Mapping, data_dir: str, device: torch.device) -> NoisyQuadratic:
    """From a task config; its defaults live in configs/task/noisy_quadratic.yaml only."""
    return NoisyQuadratic(name=str(cfg["name"]), dim=int(cfg["dim"]), h_min=float(cfg["h_min"]),
                          h_max=float(cfg["h_max"]), noise=float(cfg["noise"]),
                          steps_per_epoch=int(cfg["steps_per_epoch"]), batch_size=int(cfg["batch_size"]),
                          init_scale=float(cfg["init_scale"]), device=device)
