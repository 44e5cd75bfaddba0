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
        """Each group's optimizer label; where one optimizer has several variants among the groups, the
        optimizer settings that tell them apart are appended ('CM (momentum=0.99)'). Task settings
        (task.epochs=2 ...) are left out unless they alone tell two groups apart."""
        def labels_ignoring(prefixes: tuple[str, ...]) -> list[str]:
            parts = [[p for p in variant_parts(g.variant) if not p.startswith(prefixes)] for g in groups]
            out = []
            for group, own_parts in zip(groups, parts):
                siblings = [set(p) for g, p in zip(groups, parts) if g.optim == group.optim]
                common = set.intersection(*siblings)
                own = [p for p in own_parts if p not in common]
                out.append(self.label(group.optim) + (f" ({', '.join(own)})" if own else ""))
            return out

        labels = labels_ignoring(("task.",))
        per_task = [(g.task, label) for g, label in zip(groups, labels)]
        if len(set(per_task)) < len(per_task):  # two groups of one task differ only in task settings
            labels = labels_ignoring(())
        return labels
