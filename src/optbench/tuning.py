"""The tuning protocol: search spaces as config (configs/tune/*.yaml) and the choice of each optimizer's setting
by validation, as the papers compare optimizers (each at its best learning rate) and as DeepOBS prescribes.

A tune config defines a grid per optimizer (``space``, or ``optims.<name>`` for an optimizer of its own) and
Hydra's sweeper goes over ``tune.point``; ``apply`` turns the point into the optimizer settings it stands for
before the run is named, so a tuned run and the same setting given by hand share one run directory.

Choosing the setting from the runs is optbench.selection's job (this module stays light: the trainer imports
it).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Mapping

from optbench.errors import ConfigError
from optbench.rundir import lookup

_MISSING = object()


def _set(cfg: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for key in parents:
        node = node[key]
    node[last] = value


def _axis(key: str, spec: Any, cfg: Mapping) -> list[Any]:
    """The values of one key of the space: ``{values: [...]}``, or ``{scale: [...]}`` as multiples of the
    optimizer's own value (4 significant digits, so run directories read 0.0316, not 0.031622776601683794)."""
    name = cfg["optim"]["name"]
    current = lookup(cfg, key, _MISSING)
    if current is _MISSING:
        keys = ", ".join(f"optim.{k}" for k in cfg["optim"] if k != "name")
        raise ConfigError(f"tune.space: {key} is not a setting of optimizer {name} (its settings: {keys}); give "
                          f"{name} a space of its own under tune.optims.{name}")
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in ("values", "scale"):
        raise ConfigError(f"tune space for {key}: write {{values: [...]}} or {{scale: [...]}}, got {spec!r}")
    (kind, items), = spec.items()
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"tune space for {key}: {kind} must be a non-empty list, got {items!r}")
    if kind == "values":
        return list(items)
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise ConfigError(f"tune space for {key}: scale needs a number, but {name}'s {key} is {current!r}; "
                          "list the values instead ({values: [...]})")
    return [float(f"{current * float(s):.4g}") for s in items]


def grid(cfg: Mapping) -> list[dict[str, Any]]:
    """Every point of the run's tune space for its optimizer, in order (the last key varies fastest)."""
    tune, name = cfg["tune"], cfg["optim"]["name"]
    per_optim = tune.get("optims") or {}
    space = per_optim.get(name, tune.get("space"))
    if not space:
        has = ", ".join(sorted(per_optim)) or "none"
        raise ConfigError(f"tune={tune.get('name')}: no search space for optimizer {name} (tune.space is empty; "
                          f"optimizers with their own: {has}); add tune.optims.{name}")
    axes = {key: _axis(key, spec, cfg) for key, spec in space.items()}
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def apply(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run config with its tuning point's settings in place (and recorded as ``tune.setting``); a config
    without ``tune`` (or with ``tune.point: null``) is returned as it is."""
    tune = cfg.get("tune")
    if not tune:
        return dict(cfg)
    if tune.get("point") is None:
        return _scaled(cfg, tune.get("lr_scale"))
    points = grid(cfg)
    point = tune["point"]
    if isinstance(point, bool) or not isinstance(point, int) or not 0 <= point < len(points):
        raise ConfigError(f"tune.point={point!r} is outside the grid of {len(points)} points for optimizer "
                          f"{cfg['optim']['name']}; sweep tune.point=range(0,{len(points)})")
    out = copy.deepcopy(dict(cfg))
    for key, value in points[point].items():
        _set(out, key, value)
    out["tune"]["setting"] = dict(points[point])
    return out


def _scaled(cfg: Mapping[str, Any], scale: Any) -> dict[str, Any]:
    """Random search (tune=lr_random): the sampler's ``tune.lr_scale`` times the optimizer's own lr."""
    if scale is None or scale == 1.0:
        return dict(cfg)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ConfigError(f"tune.lr_scale={scale!r} must be a positive number")
    out = copy.deepcopy(dict(cfg))
    out["optim"]["lr"] = float(f"{cfg['optim']['lr'] * scale:.4g}")
    out["tune"]["setting"] = {"optim.lr": out["optim"]["lr"]}
    return out
