"""A metric against epoch for several optimizers on one task: mean over seeds with a min-max band."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optbench.plot.runs import RunGroup  # noqa: E402

# Okabe-Ito: colour-blind safe
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

LINESTYLES = ["-", "--", ":", "-."]  # after the palette runs out
LOG_METRICS = ("loss",)


def plot_metric(ax, groups: Sequence[RunGroup], metric: str, source: str = "metrics", log_y: bool | None = None):
    for i, group in enumerate(groups):
        x, mean, low, high = group.curve(metric, source)
        if len(x) == 0:
            continue
        color, style = PALETTE[i % len(PALETTE)], LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]
        seeds = len(group.runs)
        ax.plot(x, mean, color=color, linestyle=style, label=f"{group.label} ({seeds} seed{'s' if seeds > 1 else ''})")
        if seeds > 1:
            ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    if log_y if log_y is not None else metric.endswith(LOG_METRICS):
        ax.set_yscale("log")
    ax.set_xlabel("epoch" if source == "metrics" else "iteration")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)


def compare_figure(groups: Sequence[RunGroup], metrics: Sequence[str], title: str, out: Path) -> list[Path]:
    """One panel per metric, one curve per group; writes out.png and out.pdf."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        plot_metric(ax, groups, metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout()
    if handles:  # beside the panels, so a long list of optimizers never hides a curve
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    return save_figure(fig, out)


def save_figure(fig, out: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """out.png and out.pdf (the tight box keeps legends placed outside the panels); closes the figure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(f".{fmt}") for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths
