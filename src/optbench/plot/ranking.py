"""The comparison figure of many optimizers on one task (the quickstart's): which did best, and how sure we are.

Left, a ranked dot plot: every optimizer's final validation loss (and, where the task has one, its main metric),
the mean over finished seeds with the seeds' range as a bar, best first. Right, small multiples of the
validation loss against epoch by family (momentum, adaptive, hypergradient, YellowFin): each family's best
optimizer drawn strong and labelled, the others faint, so twenty curves never share one panel.
Computed from ``optbench.results.load``'s DataFrame.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from optbench.plot.curves import PALETTE, save_figure  # noqa: E402
from optbench.plot.style import variant_parts  # noqa: E402
from optbench.rundir import FINAL  # noqa: E402
from optbench.summary import main_metric  # noqa: E402

FAMILIES = ("momentum", "adaptive", "hypergradient", "YellowFin")


def family(optim: str) -> str:
    if optim.endswith("_hd") or optim.endswith("lop"):
        return "hypergradient"
    if optim.startswith("yellowfin"):
        return "YellowFin"
    if optim in ("adam", "amsgrad", "adamw", "expectigrad", "adamp"):
        return "adaptive"
    return "momentum"


def _labelled(metrics: pd.DataFrame) -> pd.DataFrame:
    """A 'label' column: the optimizer, with the settings that tell its variants apart where it has several."""
    labels = {}
    for optim, variants in metrics.groupby("optim")["variant"].unique().items():
        parts = {v: variant_parts(v) for v in variants}
        common = set.intersection(*(set(p) for p in parts.values()))
        for variant, own in parts.items():
            own = [p for p in own if p not in common]
            labels[(optim, variant)] = optim + (f" ({', '.join(own)})" if own and len(variants) > 1 else "")
    return metrics.assign(label=[labels[k] for k in zip(metrics["optim"], metrics["variant"])])


def final_values(metrics: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per label: mean, min and max over finished seeds of the column's last value, and the seed count."""
    done = metrics[metrics["status"].isin(FINAL)]
    last = done.sort_values("epoch").groupby(["label", "seed"])[column].last()
    return last.groupby("label").agg(["mean", "min", "max", "count"])


def _dots(ax, stats: pd.DataFrame, order: list[str], column: str, colors: dict) -> None:
    y = range(len(order))
    rows = stats.reindex(order)
    ax.hlines(list(y), rows["min"], rows["max"], color=[colors[k] for k in order], linewidth=2, alpha=0.6)
    ax.scatter(rows["mean"], list(y), color=[colors[k] for k in order], zorder=3, s=18)
    ax.set_yticks(list(y), order, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"final {column.replace('_', ' ')}", fontsize=8)
    if column.endswith("loss") and (rows["min"] > 0).all():
        ax.set_xscale("log")  # one slow optimizer must not squash the others
    ax.grid(axis="x", alpha=0.3)


def _family_panel(ax, curves: pd.DataFrame, members: list[str], best: str | None, color: str, name: str) -> None:
    for label in members:
        curve = curves.loc[label]
        strong = label == best
        ax.plot(curve.index, curve["mean"], color=color if strong else "0.6", linewidth=2.2 if strong else 0.9,
                label=f"{label} (best)" if strong else None, zorder=3 if strong else 2)
        if strong:
            ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.2, linewidth=0)
    ax.set_title(f"{name} ({len(members)})", fontsize=9)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if best is not None:
        ax.legend(fontsize=7, frameon=False, loc="upper right")


def ranking_figure(metrics: pd.DataFrame, task: str, out: Path) -> list[Path]:
    """Writes out.png and out.pdf for one task's rows of ``results.load``."""
    metrics = _labelled(metrics[metrics["task"] == task])
    metric = main_metric(metrics.columns)
    loss = final_values(metrics, "val_loss").sort_values("mean")
    order = list(loss.index)
    colors = {label: PALETTE[FAMILIES.index(family(label.split(" ")[0]))] for label in metrics["label"].unique()}
    extra = metric != "loss" and f"val_{metric}" in metrics
    fig = plt.figure(figsize=(14, max(5.0, 0.22 * len(order) + 1.5)))
    grid = fig.add_gridspec(2, 4, width_ratios=[1.1, 1.1 if extra else 0.01, 1, 1])
    _dots(fig.add_subplot(grid[:, 0]), loss, order, "val_loss", colors)
    if extra:
        _dots(fig.add_subplot(grid[:, 1]), final_values(metrics, f"val_{metric}"), order, f"val_{metric}", colors)
    done = metrics[metrics["status"].isin(FINAL)]
    curves = done.groupby(["label", "epoch"])["val_loss"].agg(["mean", "min", "max"])
    for i, name in enumerate(FAMILIES):
        ax = fig.add_subplot(grid[i // 2, 2 + i % 2])
        members = [label for label in order if family(label.split(" ")[0]) == name]
        _family_panel(ax, curves, members, members[0] if members else None, PALETTE[i], name)
        ax.set_xlabel("epoch", fontsize=8) if i >= 2 else None
    fig.suptitle(f"{task}: {len(order)} optimizers ranked by final validation loss (dots: mean over "
                 f"{_seeds(loss)} finished seeds, bars: their range); right: validation loss by family, the "
                 "family's best highlighted", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def _seeds(stats: pd.DataFrame) -> str:
    counts = sorted(set(int(c) for c in stats["count"]))
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
