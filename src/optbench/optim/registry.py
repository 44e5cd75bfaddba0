"""Name -> constructor table, and the one function that turns an ``optim`` config into an optimizer.

An ``optim`` config names its constructor with ``algorithm`` (a name in ALGORITHMS); every other key except
``name`` and ``lr_schedule`` is passed to the constructor by its own name, so any hyperparameter can be
overridden from the command line as ``optim.<arg>=value``.

Every constructor validates its arguments, so building the optimizer is the configuration check
(optbench.checks builds it on a placeholder parameter before any data is loaded). torch's own optimizers let
through values such as momentum >= 1 or a NaN lr: their entries here are torch's classes behind the same
checks (``checked_torch``), with torch's signature.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import torch

from optbench.optim._checks import check_betas, check_positive, check_unit_interval
from optbench.registry import Registry

_NOT_CONSTRUCTOR_ARGS = ("name", "algorithm", "lr_schedule")


def _nonnegative(name: str, value: Any) -> None:
    check_positive(name, value, allow_zero=True)


def _two_betas(name: str, value: Any) -> None:
    check_betas(name, value, length=2)


def _closed_unit(name: str, value: Any) -> None:
    check_unit_interval(name, value, closed=True)


def _nesterov_needs_momentum(args: Mapping[str, Any]) -> None:
    if args["nesterov"] and (args["momentum"] <= 0 or args["dampening"] != 0):
        raise ValueError(f"nesterov=True needs momentum > 0 and dampening = 0, got momentum={args['momentum']!r}, "
                         f"dampening={args['dampening']!r}")


def checked_torch(cls: type[torch.optim.Optimizer], together: Callable[[Mapping[str, Any]], None] | None = None,
                  **checks: Callable[[str, Any], None]) -> Callable[..., Any]:
    """``cls`` with its arguments checked first (``checks``: argument name -> check(name, value); ``together``:
    a check of all arguments at once)."""
    signature = inspect.signature(cls)

    def build(params, *args, **kwargs) -> torch.optim.Optimizer:
        bound = signature.bind(params, *args, **kwargs)
        bound.apply_defaults()
        for name, check in checks.items():
            check(name, bound.arguments[name])
        if together is not None:
            together(bound.arguments)
        return cls(params, *args, **kwargs)

    build.__signature__ = signature  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = cls.__name__
    build.__doc__ = f"torch.optim.{cls.__name__} with optbench's argument checks."
    return build


SGD = checked_torch(torch.optim.SGD, _nesterov_needs_momentum, lr=_nonnegative, momentum=check_unit_interval,
                    dampening=_closed_unit, weight_decay=_nonnegative)
Adam = checked_torch(torch.optim.Adam, lr=_nonnegative, betas=_two_betas, eps=check_positive,
                     weight_decay=_nonnegative)
AdamW = checked_torch(torch.optim.AdamW, lr=_nonnegative, betas=_two_betas, eps=check_positive,
                      weight_decay=_nonnegative)
RMSprop = checked_torch(torch.optim.RMSprop, lr=_nonnegative, alpha=check_unit_interval, eps=check_positive,
                        weight_decay=_nonnegative, momentum=check_unit_interval)
Adagrad = checked_torch(torch.optim.Adagrad, lr=_nonnegative, lr_decay=_nonnegative, weight_decay=_nonnegative,
                        initial_accumulator_value=_nonnegative, eps=check_positive)

ALGORITHMS = Registry("algorithm", "optbench.optim", {
    "SGD": "registry:SGD",
    "Adam": "registry:Adam",
    "AdamW": "registry:AdamW",
    "RMSprop": "registry:RMSprop",
    "Adagrad": "registry:Adagrad",
    "AggMo": "aggmo:AggMo",
    "AggMo.from_exp_form": "aggmo:AggMo.from_exp_form",
    "Expectigrad": "expectigrad:Expectigrad",
    "AdamP": "adamp:AdamP",
    "SGDP": "adamp:SGDP",
    "Hypergrad": "hypergrad:Hypergrad",
    "SGDHD": "hypergrad:SGDHD",
    "AdamHD": "hypergrad:AdamHD",
    "YFOptimizer": "yellowfin:YFOptimizer",
})


def constructor_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Config entries that are constructor arguments; lists become tuples (betas), None means 'not given'."""
    kwargs = {}
    for key, value in cfg.items():
        if key in _NOT_CONSTRUCTOR_ARGS or value is None:
            continue
        kwargs[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return kwargs


def build_optimizer(params, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build the optimizer an ``optim`` config describes; unknown names and arguments, and values out of range,
    are ValueErrors whose message starts with the offending key (``lr must be ...``)."""
    algorithm = cfg.get("algorithm")
    constructor = ALGORITHMS.get(algorithm)
    kwargs = constructor_kwargs(cfg)
    accepted = inspect.signature(constructor).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        valid = [k for k in accepted if k not in ("self", "params")]
        raise ValueError(f"{unknown[0]} is not an argument of {algorithm}; valid: {', '.join(valid)}")
    return constructor(params, **kwargs)
