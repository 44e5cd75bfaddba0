"""Name -> object tables for optimizers, tasks and models: one mechanism for all three.

Entries are "module:attribute" paths under one package, imported on first use: building a language-model
task never imports torchvision, and a module that fails to import names itself when it is asked for instead of
breaking every other name. An attribute path may be dotted (``aggmo:AggMo.from_exp_form``, a classmethod).
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping


class Registry:
    def __init__(self, key: str, package: str, entries: Mapping[str, str]) -> None:
        self.key, self.package, self._entries = key, package, dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: Any) -> Any:
        """The object registered as ``name``; an unknown name is an error that lists the valid ones."""
        if name not in self._entries:
            raise ValueError(f"{self.key}={name!r} is not known; valid: {', '.join(self.names())}")
        module, _, attribute = self._entries[name].partition(":")
        obj: Any = importlib.import_module(f"{self.package}.{module}")
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return obj
