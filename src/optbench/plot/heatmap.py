"""A heatmap panel (``kind: heatmap``): Baydin et al.'s alpha_0 x beta grid, the iterations an optimizer needs
until its (smoothed) training loss first reaches a threshold, for every pair of two config values (``params``),
mean over the seeds that reached it. A cell no seed reached shows "-", one where a seed diverged first "x"."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.colors import LogNorm

from optbench.plot.measures import times_by_setting
from optbench.plot.runs import RunGroup
from optbench.plot.smoothing import smoother
from optbench.plot.specs import Panel
from optbench.plot.style import Style
from optbench.results import higher_is_better


def heatmap_grid(groups: Sequence[RunGroup], panel: Panel, threshold: float):
    """(x values, y values, mean iterations [y, x] with NaN where none reached, diverged mask [y, x])."""
    px, py = panel.params
    times = times_by_setting(groups, [px, py], panel.y, threshold, higher_is_better(panel.y),
                             panel.get("source", "steps"), smoother(panel.get("smooth")))
    grid = times.pivot_table(index=py, columns=px, values="steps", aggfunc="mean", dropna=False)
    diverged = times.pivot_table(index=py, columns=px, values="diverged", aggfunc="any", fill_value=False)
    diverged = diverged.reindex(index=grid.index, columns=grid.columns, fill_value=False)
    return grid.columns.to_numpy(), grid.index.to_numpy(), grid.to_numpy(dtype=float), diverged.to_numpy(bool)


def draw_heatmap(ax, panel: Panel, task: str, groups: Sequence[RunGroup], style: Style) -> None:
    optims = panel.get("optims") or sorted({g.optim for g in groups})
    threshold = (panel.thresholds or {}).get(task, {})
    threshold = threshold.get(optims[0], threshold.get(style.family(optims[0])))
    chosen = [g for g in groups if g.optim == optims[0]]
    if threshold is None or not chosen:
        ax.text(0.5, 0.5, f"no runs or threshold for {optims[0]} on {task}", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
        return
    xs, ys, cells, diverged = heatmap_grid(chosen, panel, float(threshold))
    finite = cells[np.isfinite(cells)]
    norm = LogNorm(finite.min(), max(finite.max(), finite.min() * 1.01)) if finite.size and finite.min() > 0 \
        else None
    image = ax.imshow(np.ma.masked_invalid(cells), origin="lower", cmap="viridis_r", norm=norm, aspect="auto")
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs], fontsize=7, rotation=45)
    ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys], fontsize=7)
    for (i, j), value in np.ndenumerate(cells):
        text = f"{value:.0f}" if np.isfinite(value) else ("x" if diverged[i, j] else "-")
        ax.text(j, i, text, ha="center", va="center", fontsize=6, color="white" if np.isfinite(value) else "0.3")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    ax.set_title(f"{style.label(optims[0])}: iterations to {panel.y} <= {float(threshold):g}", fontsize=9)
    ax.grid(False)
