"""DeepOBS's learning-rate sensitivity panel: the validation score each optimizer reaches against its learning
rate, one line per optimizer, the seeds' range as a band, diverged settings as crosses on the top edge and the
setting tuning selects as a star. Computed from optbench.selection's settings table (one row per setting).

Where a grid varies more than the learning rate (tune=lr_momentum), each learning rate shows its best setting
over the other keys, so the line is the profile an optimizer's user sees after tuning the rest.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from optbench.plot.curves import save_figure  # noqa: E402
from optbench.plot.style import Style  # noqa: E402
from optbench.selection import run_scores, settings_table  # noqa: E402


def lr_profile(settings: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Per (task, optim, optim.lr): the best-ranked setting at that learning rate, with the min and max of its
    seeds' scores (diverged seeds count as the worst value)."""
    best = settings.sort_values("rank").drop_duplicates(["task", "optim", "optim.lr"])
    spread = scores.groupby(["task", "optim", "variant"])["val"].agg(["min", "max"]).reset_index()
    return best.merge(spread, on=["task", "optim", "variant"], how="left").sort_values(["task", "optim", "optim.lr"])


def draw_panel(ax, profile: pd.DataFrame, style: Style, metric: str, select: str) -> None:
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for optim, rows in profile.groupby("optim", sort=True):
        color = style.color(optim)
        ok = rows[rows["val"].abs() != math.inf]
        ax.plot(ok["optim.lr"], ok["val"], marker="o", markersize=4, color=color, label=style.label(optim))
        ax.fill_between(ok["optim.lr"], ok["min"], ok["max"], color=color, alpha=0.18, linewidth=0)
        lost = rows[rows["val"].abs() == math.inf]["optim.lr"]
        if len(lost):
            ax.plot(lost, [1.0] * len(lost), transform=top, marker="x", color=color, linestyle="", clip_on=False)
        chosen = rows[rows["rank"] == 1]
        ax.plot(chosen["optim.lr"], chosen["val"], marker="*", markersize=13, color=color, linestyle="",
                markeredgecolor="black", markeredgewidth=0.6)
    ax.set_xscale("log")
    if metric in ("loss", "sse", "ppl"):
        ax.set_yscale("log")
    ax.set_xlabel("learning rate (optim.lr)")
    ax.set_ylabel(f"{select} val_{metric}")
    ax.grid(alpha=0.3)


def sensitivity_figure(metrics: pd.DataFrame, out: Path, metric: str = "loss", select: str = "best",
                       style: Style | None = None) -> list[Path]:
    """One panel per task of ``results.load``'s rows; writes out.png and out.pdf."""
    settings = settings_table(metrics, metric, select)
    if settings.empty or "optim.lr" not in settings:
        raise ValueError("no settled runs whose learning rate varies: run a grid first "
                         "(python main.py -m task=T optim=A,B +tune=lr)")
    settings = settings.dropna(subset=["optim.lr"])
    profile = lr_profile(settings, run_scores(metrics, metric, select))
    tasks = sorted(profile["task"].unique())
    style = style or Style()
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        draw_panel(ax, profile[profile["task"] == task], style, metric, select)
        ax.set_title(task, fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.text(0.005, -0.02, "dots: mean over seeds; band: the seeds' range; x: a seed diverged at this learning rate; "
             "star: the setting tuning selects", fontsize=6, color="0.4")
    fig.tight_layout()
    return save_figure(fig, out)
