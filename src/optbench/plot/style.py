"""Who gets which colour, line style and legend label: one Okabe-Ito colour per optimizer family (a baseline
and its hypergradient or YellowFin version share a colour and differ in line style), set in the spec's
``style`` block."""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from optbench.plot.curves import PALETTE
from optbench.plot.runs import RunGroup


def variant_parts(variant: str) -> list[str]:
    """'lr=0.1,betas=[0.9,0.99]' -> ['lr=0.1', 'betas=[0.9,0.99]'] (commas inside brackets kept)."""
    return [p for p in re.split(r",(?![^\[]*\])", variant) if p and p != "default"]


class Style:
    def __init__(self, spec: Mapping | None = None):
        spec = spec or {}
        self.families: dict[str, list[str]] = {k: list(v) for k, v in (spec.get("families") or {}).items()}
        self.labels: dict[str, str] = dict(spec.get("labels") or {})
        self.linestyles: dict[str, str] = dict(spec.get("linestyles") or {})
        self._extra: dict[str, int] = {}  # optims outside every family, in order of first use

    def family(self, optim: str) -> str:
        return next((name for name, members in self.families.items() if optim in members), optim)

    def color(self, optim: str) -> str:
        family = self.family(optim)
        names = list(self.families)
        if family in names:
            index = names.index(family)
        else:
            index = len(names) + self._extra.setdefault(family, len(self._extra))
        return PALETTE[index % len(PALETTE)]

    def linestyle(self, optim: str) -> str:
        return self.linestyles.get(optim, "-")

    def label(self, optim: str) -> str:
        return self.labels.get(optim, optim)

    def group_labels(self, groups: Sequence[RunGroup]) -> list[str]:
        """Each group's optimizer label; where one optimizer has several variants in the same axes, the
        variant parts that tell them apart are appended."""
        labels = []
        for group in groups:
            label = self.label(group.optim)
            siblings = [g for g in groups if g.optim == group.optim]
            if len(siblings) > 1:
                common = set.intersection(*(set(variant_parts(g.variant)) for g in siblings))
                own = [p for p in variant_parts(group.variant) if p not in common]
                label += f" ({', '.join(own) or 'default'})"
            labels.append(label)
        return labels
