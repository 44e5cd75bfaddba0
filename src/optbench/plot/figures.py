"""Spec -> matplotlib figures: grids of panels, each a metric against epoch or iteration for several
optimizers (mean over seeds with a min-max or std band, baselines dashed), an optional per-iteration inset, or
a sensitivity panel (iterations to reach a loss threshold against a hyperparameter such as alpha_0).

Runs that diverged end in a cross at their last finite point; runs still going are drawn as far as they got.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation, NullFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from optbench.plot.curves import save_figure  # noqa: E402
from optbench.plot.heatmap import draw_heatmap  # noqa: E402
from optbench.plot.measures import times_by_setting  # noqa: E402
from optbench.plot.runs import Run, RunGroup, group_runs, tuned_only  # noqa: E402
from optbench.plot.smoothing import smoother  # noqa: E402
from optbench.plot.specs import FigureFile, FigureSpec, Panel  # noqa: E402
from optbench.plot.style import Style  # noqa: E402
from optbench.results import higher_is_better  # noqa: E402

AXIS_NAMES = {"epoch": "epoch", "step": "iteration", "time_s": "training time (s)", "lr": "learning rate",
              "mu": "momentum", "train_loss": "training loss", "val_loss": "validation loss",
              "test_loss": "test loss", "loss": "training loss", "train_acc": "training accuracy",
              "val_acc": "validation accuracy", "test_acc": "test accuracy", "val_sse": "validation sse",
              "train_sse": "training sse", "val_ppl": "validation perplexity", "train_ppl": "training perplexity",
              "weight_norm": "weight norm", "x": "x", "optim.lr": "learning rate (optim.lr)"}
BAND_NAMES = {"minmax": "min-max over seeds", "std": "mean ± std over seeds", "none": ""}


def _axis_name(column: str) -> str:
    return AXIS_NAMES.get(column, column)


def resolve_task(fig_file: FigureFile, panel: Panel, tasks_with_runs: set[str]) -> tuple[str | None, list[str]]:
    """The first candidate task of the panel that has runs, and all candidates (for the 'no runs' note)."""
    candidates = fig_file.candidates(panel.task)
    return next((t for t in candidates if t in tasks_with_runs), None), candidates


def _selectors(panel: Panel, groups: Sequence[RunGroup]) -> list[dict]:
    if panel.get("curves"):
        return [dict(c) for c in panel.curves]
    optims = panel.get("optims") or sorted({g.optim for g in groups})
    return [{"optim": o} for o in optims]


def select_groups(panel: Panel, groups: Sequence[RunGroup], ignore: Sequence[str] = ()
                  ) -> list[tuple[RunGroup, dict]]:
    """(group restricted to the runs that match, curve settings) in the order the panel lists them; a config
    key in ``ignore`` is not filtered on (the swept parameter of a sensitivity panel)."""
    chosen = []
    for selector in _selectors(panel, groups):
        where = {**(panel.get("where") or {}), **(selector.get("where") or {})}
        where = {k: v for k, v in where.items() if k not in ignore}
        for group in groups:
            if group.optim != selector["optim"]:
                continue
            runs = [r for r in group.runs if r.matches(where)]
            if runs:
                chosen.append((RunGroup(group.task, group.optim, group.variant, runs), selector))
    return chosen


def _finite_for_scale(values: np.ndarray, log: bool) -> np.ndarray:
    values = np.where(np.isfinite(values), values, np.nan)
    return np.where(values > 0, values, np.nan) if log else values


class PlainLogFormatter(LogFormatterSciNotation):
    """Log-axis labels as plain numbers (0.3, 2, 0.001): the default picks which ticks get a label, this
    only writes them without 3x10^-1 notation, which crowds narrow ranges."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def set_log_scale(ax, axis: str) -> None:
    """Log scale on 'x' or 'y' when some drawn point is positive (matplotlib refuses an all-nonpositive log
    axis, e.g. a panel where no run reached its threshold); otherwise the axis stays linear."""
    lines = [line for line in ax.get_lines() if line.get_transform() == ax.transData]  # not edge markers
    values = [line.get_xdata() if axis == "x" else line.get_ydata() for line in lines]
    data = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values]) if values else np.array([])
    if np.any(np.isfinite(data) & (data > 0)):
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_formatter(PlainLogFormatter())
        target.set_minor_formatter(PlainLogFormatter())


def _status_note(group: RunGroup) -> str:
    counts = group.statuses()
    notes = [f"{counts[s]} {s}" for s in ("diverged", "running", "failed") if counts.get(s)]
    return f" [{', '.join(notes)}]" if notes else ""


def draw_curves(ax, panel: Panel, selected: Sequence[tuple[RunGroup, dict]], style: Style,
                spec: Mapping | None = None, with_labels: bool = True) -> None:
    """One line per group (mean over seeds) and its band; ``spec`` overrides the panel's source/x/y/scales
    (used for insets)."""
    inset = spec is not None  # a curve may name its own y column (YellowFin's mu_hat beside mu); an inset its own
    spec = {**panel.settings, **(spec or {})}
    source, y, log_y = spec.get("source", "metrics"), spec["y"], bool(spec.get("log_y"))
    x = spec.get("x") or ("epoch" if source == "metrics" else "step")
    transform = smoother(spec.get("smooth"))
    band = spec.get("band", "minmax")
    labels = style.group_labels([g for g, _ in selected])
    for (group, selector), label in zip(selected, labels):
        column = y if inset else selector.get("y", y)
        xs, mean, low, high = group.curve(column, source, x, band, transform)
        if not len(xs):
            continue
        color = selector.get("color") or style.color(group.optim)
        linestyle = selector.get("linestyle") or style.linestyle(group.optim)
        text = (selector.get("label") or label) + _status_note(group) if with_labels else None
        ax.plot(xs, _finite_for_scale(mean, log_y), color=color, linestyle=linestyle, linewidth=1.4, label=text)
        if band != "none" and len(group.runs) > 1:
            ax.fill_between(xs, _finite_for_scale(low, log_y), _finite_for_scale(high, log_y), color=color,
                            alpha=0.18, linewidth=0)
        for run, ry in group.series(column, source, x, transform):
            last = ry.reset_index(drop=True).last_valid_index() if run.status == "diverged" else None
            if last is not None:  # a cross where a diverged seed's curve ends
                ax.plot(ry.index[last], ry.iloc[last], marker="x", color=color, markersize=7, linestyle="")
    if log_y:
        set_log_scale(ax, "y")
    if spec.get("log_x"):
        set_log_scale(ax, "x")


def draw_sensitivity(ax, panel: Panel, task: str, groups: Sequence[RunGroup], style: Style) -> None:
    """Iterations until the (smoothed) loss first reaches the task's threshold, against ``param`` (one curve
    per optimizer; mean over the seeds that reached it, min-max band; a cross on the top edge where no seed
    reached it)."""
    thresholds = (panel.thresholds or {}).get(task)
    if not thresholds:
        ax.text(0.5, 0.5, f"no thresholds for {task}", ha="center", va="center", transform=ax.transAxes)
        return
    source, column = panel.get("source", "metrics"), panel.y
    transform, higher = smoother(panel.get("smooth")), higher_is_better(column)
    top = blended_transform_factory(ax.transData, ax.transAxes)
    selected = select_groups(panel, groups, ignore=[panel.param])
    for optim in dict.fromkeys(g.optim for g, _ in selected):
        threshold = thresholds.get(optim, thresholds.get(style.family(optim)))
        if threshold is None:
            continue
        groups = [g for g, _ in selected if g.optim == optim]
        times = times_by_setting(groups, [panel.param], column, threshold, higher, source, transform)
        if times.empty:
            continue
        times = times.rename(columns={panel.param: "value"})
        stats = times.groupby("value")["steps"].agg(["mean", "min", "max", "count"])
        color, linestyle = style.color(optim), style.linestyle(optim)
        op = "≥" if higher else "≤"
        ax.plot(stats.index, stats["mean"], color=color, linestyle=linestyle, marker="o", markersize=4,
                label=f"{style.label(optim)} ({op} {threshold:g})")
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.18, linewidth=0)
        missed = stats.index[stats["count"] == 0]
        diverged = set(times.loc[times["diverged"], "value"])
        for marker, xs in (("x", [v for v in missed if v in diverged]),  # a seed diverged before reaching it
                           ("^", [v for v in missed if v not in diverged])):  # the budget ended first
            if xs:
                ax.plot(xs, [1.0] * len(xs), transform=top, marker=marker, color=color, linestyle="",
                        markerfacecolor="none" if marker == "^" else color, clip_on=False)
    if panel.get("log_x", True):
        set_log_scale(ax, "x")
    if panel.get("log_y"):
        set_log_scale(ax, "y")


def draw_trajectory(ax, panel: Panel, task: str, groups: Sequence[RunGroup], style: Style) -> None:
    """Each run's iterates as a path through (x, y), in step order (a curves panel would sort by x)."""
    labels = style.group_labels([g for g, _ in select_groups(panel, groups)])
    for (group, selector), label in zip(select_groups(panel, groups), labels):
        color = selector.get("color") or style.color(group.optim)
        for i, run in enumerate(group.runs):
            table = getattr(run, panel.get("source", "metrics"))
            if panel.x not in table or panel.y not in table:
                continue
            ax.plot(table[panel.x], table[panel.y], color=color, linewidth=1.0, marker=".", markersize=2,
                    linestyle=selector.get("linestyle") or style.linestyle(group.optim),
                    label=(selector.get("label") or label) if i == 0 else None)
            ax.plot(table[panel.x].iloc[0], table[panel.y].iloc[0], marker="o", color="0.3", linestyle="")
    ax.plot([0], [0], marker="*", markersize=10, color="black", linestyle="")  # the optimum


PANEL_DRAWERS = {"sensitivity": draw_sensitivity, "heatmap": draw_heatmap, "trajectory": draw_trajectory}


def _decorate(ax, panel: Panel, task: str | None, stand_in: bool = False) -> None:
    """Axis labels, title, limits. ``stand_in``: the runs are of a miniature standing in for the paper's task
    (QUICK=1), which the title then names."""
    source = panel.get("source", "metrics")
    if panel.kind == "sensitivity":
        xlabel, ylabel = _axis_name(panel.param), "iterations to threshold"
    elif panel.kind == "heatmap":
        xlabel, ylabel = _axis_name(panel.params[0]), _axis_name(panel.params[1])
    else:
        x = panel.get("x") or ("epoch" if source == "metrics" else "step")
        xlabel, ylabel = _axis_name(x), _axis_name(panel.y) if isinstance(panel.y, str) else ""
    ax.set_xlabel(panel.get("xlabel") or xlabel)
    ax.set_ylabel(panel.get("ylabel") if isinstance(panel.get("ylabel"), str) else ylabel)
    title = panel.get("title")
    title = None if isinstance(title, Mapping) else title
    title = title if title is not None else (task or "")
    ax.set_title(f"{title} [{task}]" if stand_in and title != task else title, fontsize=10)
    if panel.get("xlim"):
        ax.set_xlim(*panel.xlim)
    if isinstance(panel.get("ylim"), (list, tuple)):
        ax.set_ylim(*panel.ylim)
    ax.grid(alpha=0.3)


def _inset(ax, panel: Panel, selected, style: Style) -> None:
    inset = dict(panel.inset)
    child = ax.inset_axes(inset.pop("bounds", [0.56, 0.56, 0.4, 0.36]))
    spec = {"source": "steps", "band": panel.get("band", "minmax"), **inset}
    draw_curves(child, panel, selected, style, spec, with_labels=False)
    child.tick_params(labelsize=6)
    for axis in (child.xaxis, child.yaxis):
        axis.set_minor_formatter(NullFormatter())  # log-axis minor labels overlap at this size
    child.set_title(inset.get("title", ""), fontsize=6)


def panel_groups(panel: Panel, groups: Sequence[RunGroup]) -> list[RunGroup]:
    """The groups a panel draws from: all, or with ``select: tuned`` each optimizer's tuned setting among the
    runs the panel shows (its ``where``)."""
    if panel.get("select") != "tuned":
        return list(groups)
    shown = [RunGroup(g.task, g.optim, g.variant, [r for r in g.runs if r.matches(panel.get("where"))])
             for g in groups]
    return tuned_only([g for g in shown if g.runs], panel.get("tuned_metric", "loss"), panel.get("tuned_by", "best"),
                      panel.get("tuned_over"))


def draw_figure(fig_file: FigureFile, fig_spec: FigureSpec, runs: Sequence[Run]):
    """A matplotlib Figure of the spec's grid, drawn from the runs (tasks without runs get a note)."""
    style = Style(fig_file.style)
    by_task: dict[str, list[RunGroup]] = {}
    for group in group_runs(runs):
        by_task.setdefault(group.task, []).append(group)
    nrows, ncols = len(fig_spec.panels), len(fig_spec.panels[0])
    w, h = fig_spec.panel_size
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    bands = set()
    for i, row in enumerate(fig_spec.panels):
        for j, panel in enumerate(row):
            ax = axes[i][j]
            task, candidates = resolve_task(fig_file, panel, set(by_task))
            if task is not None:
                panel = panel.for_task(task)
            _decorate(ax, panel, task, stand_in=task is not None and task != candidates[0])
            if task is None:
                ax.text(0.5, 0.5, "no runs for\n" + " / ".join(candidates), ha="center", va="center",
                        transform=ax.transAxes, fontsize=8, color="0.4")
                continue
            if panel.kind in PANEL_DRAWERS:
                PANEL_DRAWERS[panel.kind](ax, panel, task, by_task[task], style)
                continue
            if panel.y is None:
                ax.text(0.5, 0.5, f"no y column given for {task}", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8, color="0.4")
                continue
            selected = select_groups(panel, panel_groups(panel, by_task[task]))
            draw_curves(ax, panel, selected, style)
            bands.add(panel.get("band", "minmax"))
            if panel.get("inset"):
                _inset(ax, panel, selected, style)
            if not ax.get_lines():
                ax.text(0.5, 0.5, f"no {panel.y} logged", ha="center", va="center", transform=ax.transAxes,
                        fontsize=8, color="0.4")
    _legend(fig, axes, fig_spec.legend)
    _footnote(fig, fig_spec, bands)
    if fig_spec.title:
        fig.suptitle(fig_spec.title)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


def _footnote(fig, fig_spec: FigureSpec, bands: set) -> None:
    """What the marks mean: lines, bands, crosses (diverged), open triangles (never reached a threshold)."""
    parts = ["lines: mean over seeds"]
    note = "; ".join(BAND_NAMES[b] for b in sorted(bands) if BAND_NAMES.get(b))
    if note:
        parts.append(f"band: {note}")
    parts.append("x: diverged")
    if any(p.kind == "sensitivity" for row in fig_spec.panels for p in row):
        parts.append("open triangle: never reached the threshold")
    fig.text(0.005, 0.005, "; ".join(parts), fontsize=6, color="0.4")


def _legend(fig, axes, where: str) -> None:
    if where == "none":
        return
    if where == "each":
        for ax in axes.flat:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        return
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if not handles:
        return
    if where == "first":
        axes.flat[0].legend(handles.values(), handles.keys(), fontsize=7)
    else:
        fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=min(len(handles), 6), fontsize=7,
                   bbox_to_anchor=(0.5, 0.0))  # below the panels; save_figure's tight box keeps it


def draw_all(fig_file: FigureFile, runs: Sequence[Run], plots_dir: Path, only: Sequence[str] | None = None
             ) -> list[Path]:
    """Every figure of a spec file (or those named in ``only``) into plots_dir/<spec name>/<figure name>.{png,pdf}."""
    names = [f.name for f in fig_file.figures]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"figure={fig_file.name} has no figure {', '.join(unknown)}; its figures: {', '.join(names)}")
    written = []
    for fig_spec in (f for f in fig_file.figures if not only or f.name in only):
        fig = draw_figure(fig_file, fig_spec, runs)
        written += save_figure(fig, plots_dir / fig_file.name / fig_spec.name)
    return written
