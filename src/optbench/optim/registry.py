"""Name -> constructor table, and the one function that turns an ``optim`` config into an optimizer.

An ``optim`` config names its constructor with ``algorithm`` (a key of ALGORITHMS); every other key except
``name`` and ``lr_schedule`` is passed to the constructor by its own name, so any hyperparameter can be
overridden from the command line as ``optim.<arg>=value``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import torch

ALGORITHMS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "SGD": torch.optim.SGD,
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
}

_NOT_CONSTRUCTOR_ARGS = ("name", "algorithm", "lr_schedule")


def register(name: str, constructor: Callable[..., torch.optim.Optimizer]) -> None:
    ALGORITHMS[name] = constructor


def _register_paper_optimizers() -> None:
    """Import the paper modules lazily so a broken one names itself instead of breaking the registry."""
    import importlib

    for module, names in _PAPER_MODULES.items():
        mod = importlib.import_module(f"optbench.optim.{module}")
        for name in names:
            obj = mod
            for part in name.split("."):
                obj = getattr(obj, part)
            ALGORITHMS.setdefault(name, obj)


# module -> public names it provides (``Class.factory`` names a classmethod constructor)
_PAPER_MODULES: dict[str, tuple[str, ...]] = {
    "aggmo": ("AggMo", "AggMo.from_exp_form"),
    "expectigrad": ("Expectigrad",),
    "adamp": ("AdamP", "SGDP"),
    "hypergrad": ("Hypergrad", "SGDHD", "AdamHD"),
    "yellowfin": ("YFOptimizer",),
}


def constructor_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Config entries that are constructor arguments; lists become tuples (betas), None means 'not given'."""
    kwargs = {}
    for key, value in cfg.items():
        if key in _NOT_CONSTRUCTOR_ARGS or value is None:
            continue
        kwargs[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return kwargs


def build_optimizer(params, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build the optimizer an ``optim`` config describes; unknown names and arguments are clear errors."""
    _register_paper_optimizers()
    algorithm = cfg.get("algorithm")
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"optim.algorithm={algorithm!r} is not a known optimizer; valid: {', '.join(sorted(ALGORITHMS))}"
        )
    constructor = ALGORITHMS[algorithm]
    kwargs = constructor_kwargs(cfg)
    accepted = inspect.signature(constructor).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            valid = [k for k in accepted if k not in ("self", "params")]
            raise ValueError(
                f"optim.{unknown[0]} is not an argument of {algorithm}; valid: {', '.join(valid)}"
            )
    return constructor(params, **kwargs)
