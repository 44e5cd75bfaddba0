"""What a composed run config means beyond its own keys: the packaged config directory, the optimizer and
schedule settings a run actually uses, and the default config its variant name is measured against."""

from __future__ import annotations

import copy
import functools
import importlib.resources
from pathlib import Path
from typing import Any, Mapping


def config_dir() -> Path:
    """configs/ as installed with the package (also under a non-editable ``pip install .``)."""
    return Path(str(importlib.resources.files("optbench") / "configs"))


def config_choices(group: str) -> list[str]:
    """The configs of a group (``task``, ``optim``, ``experiment`` as ``paper/name``, ``figure`` ...)."""
    folder = config_dir() / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def compose_config(overrides: list[str]) -> dict[str, Any]:
    """The config main.py would run with these overrides, resolved to plain containers."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (main.py, a sweep): use its search path
        return OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)


def default_run_config(cfg: Mapping) -> dict[str, Any]:
    """The composed config of the same task and optimizer with nothing overridden (for the variant name)."""
    return copy.deepcopy(_default_config(cfg["task"]["name"], cfg["optim"]["name"]))


@functools.lru_cache(maxsize=256)
def _default_config(task: str, optim: str) -> dict[str, Any]:
    """Composed once per process and pair: a sweep's seeds share it (a composition costs about 0.3 s)."""
    return compose_config([f"task={task}", f"optim={optim}"])


def optimizer_config(cfg: Mapping) -> dict[str, Any]:
    """The optim config with the task's weight decay filled in where the optimizer leaves it unset."""
    optim = dict(cfg["optim"])
    if optim.get("weight_decay") is None:
        optim["weight_decay"] = cfg["task"].get("weight_decay") or 0.0
    return optim


def schedule_config(cfg: Mapping) -> dict[str, Any]:
    """The task's schedule, overridden key by key by whatever the optim config sets."""
    schedule = dict(cfg["task"].get("lr_schedule") or {})
    schedule.update({k: v for k, v in (cfg["optim"].get("lr_schedule") or {}).items() if v is not None})
    return schedule
