"""Tasks: data + model + loss + metrics, built from a ``task`` config by its ``kind``.

Each kind lives in its own module and exposes ``build(cfg, data_dir, device) -> Task``; ``_KIND_MODULES`` maps
kind -> module so that importing one task's dependencies never breaks another.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import torch

from optbench.tasks.base import Task

# kind -> module under optbench.tasks that defines build(cfg, data_dir, device)
_KIND_MODULES: dict[str, str] = {
    "classification": "classification",
    "autoencoder": "autoencoder",
    "language_model": "language_model",
    "noisy_quadratic": "quadratic",
    "reddi": "synthetic",
    "reddi_stochastic": "synthetic",
    "alt_quadratic": "synthetic",
    "adamp_toy": "synthetic",
}


def task_kinds() -> list[str]:
    return sorted(_KIND_MODULES)


def build_task(cfg: Mapping[str, Any], data_dir: str, device: torch.device) -> Task:
    kind = cfg.get("kind")
    if kind not in _KIND_MODULES:
        raise ValueError(f"task.kind={kind!r} is not a known task kind; valid: {', '.join(task_kinds())}")
    module = importlib.import_module(f"optbench.tasks.{_KIND_MODULES[kind]}")
    return module.build(cfg, data_dir, device)


__all__ = ["Task", "build_task", "task_kinds"]
