"""Tasks: data + model + loss + metrics, built from a ``task`` config by its ``kind``.

Each kind lives in its own module and exposes ``build(cfg, data_dir, device) -> Task``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from optbench.registry import Registry
from optbench.tasks.base import Task

KINDS = Registry("task.kind", "optbench.tasks", {
    "classification": "classification:build", "autoencoder": "autoencoder:build",
    "language_model": "language_model:build", "noisy_quadratic": "quadratic:build",
    "imagenet": "imagenet:build",
    **dict.fromkeys(("reddi", "reddi_stochastic", "alt_quadratic", "quadratic_2d", "adamp_toy"), "synthetic:build"),
})


def task_kinds() -> list[str]:
    return KINDS.names()


def build_task(cfg: Mapping[str, Any], data_dir: str, device: torch.device) -> Task:
    return KINDS.get(cfg.get("kind"))(cfg, data_dir, device)


__all__ = ["Task", "build_task", "task_kinds"]
