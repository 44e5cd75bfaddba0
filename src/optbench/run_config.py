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


# keys a command line may set without naming a variant (rundir.variant_name ignores them)
_IDENTITY_KEYS = ("seed", "results_dir", "data_dir", "device", "resume")


def default_run_config(cfg: Mapping, overrides: list[str] | None = None) -> dict[str, Any]:
    """The composed config of the same task and optimizer with nothing overridden (for the variant name).

    ``overrides`` are the run's command-line overrides (Hydra's ``overrides.task``) when known: if they only
    choose the task and optimizer and set keys that never name a variant, the run's config is its own default
    and the composition (about 0.35 s, paid by every run of a sweep) is skipped."""
    if overrides is not None and all(_names_no_variant(o) for o in overrides):
        return copy.deepcopy(dict(cfg))
    return copy.deepcopy(_default_config(cfg["task"]["name"], cfg["optim"]["name"]))


def _names_no_variant(override: str) -> bool:
    from optbench.rundir import VARIANT_TRAINER_KEYS

    key = override.lstrip("+~").split("=", 1)[0]
    if key in ("task", "optim") + _IDENTITY_KEYS:
        return True
    section, _, rest = key.partition(".")
    return section == "trainer" and bool(rest) and rest.split(".")[0] not in VARIANT_TRAINER_KEYS


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
