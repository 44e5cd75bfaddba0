"""Figure and table specs: YAML files under configs/figure/ and configs/table/, checked when loaded so a typo
fails with the file and key named instead of silently drawing the wrong thing.

A figure spec holds ``figures`` (name -> a grid of panels). A panel's settings are merged from the spec's
``panel`` defaults, the figure, its row and its column (later wins), so a 3 x 3 grid is three rows (what to
plot) times three columns (which task). ``task`` names a slot of ``tasks`` (a list of candidate task names,
the first with runs is drawn: the paper's task, then the QUICK miniature) or a task name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from optbench.plot.runs import BANDS
from optbench.run_config import config_dir
from optbench.plot.smoothing import smoother

CONFIGS = config_dir()

STYLE_KEYS = {"families", "labels", "linestyles", "band"}
CURVE_KEYS = {"optim", "where", "label", "color", "linestyle", "y"}  # y: the curve's own column
INSET_KEYS = {"source", "x", "y", "log_x", "log_y", "smooth", "bounds", "title"}
PANEL_KEYS = {"task", "kind", "source", "x", "y", "optims", "where", "curves", "log_x", "log_y", "smooth", "band",
              "title", "xlabel", "ylabel", "xlim", "ylim", "inset", "param", "thresholds", "select", "tuned_metric",
              "tuned_by", "tuned_over", "params"}
FIGURE_KEYS = PANEL_KEYS | {"rows", "columns", "panel_size", "legend", "suptitle"}
FIGURE_SPEC_KEYS = {"description", "results_dir", "style", "tasks", "panel", "figures"}
PANEL_KINDS = ("curves", "sensitivity", "heatmap", "trajectory")
SOURCES = ("metrics", "steps")
LEGENDS = ("figure", "first", "each", "none")

TABLE_SPEC_KEYS = {"description", "results_dir", "labels_from", "labels", "optims", "where", "tasks", "profile",
                   "speedup", "columns", "select", "tuned_metric", "tuned_by", "tuned_over"}
SELECTIONS = ("all", "tuned")  # every setting found, or each optimizer's tuned one (optbench.selection)
TABLE_TASK_KEYS = {"metric", "target", "target_split", "higher_is_better", "label", "where"}
TABLE_COLUMNS = ("final", "best", "best_val_epoch", "at_best_val", "target_steps", "target_seconds")
PROFILE_KEYS = {"time", "taus"}
SPEEDUP_KEYS = {"baseline", "optims", "column", "smooth", "settings", "tasks"}


class SpecError(ValueError):
    pass


def _check_keys(where: str, given: Mapping, allowed: set[str]) -> None:
    if not isinstance(given, Mapping):
        raise SpecError(f"{where} must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(allowed))}")


def spec_path(kind: str, name: str) -> Path:
    """configs/<kind>/<name>.yaml, or name itself when it is a path to a YAML file."""
    given = Path(name)
    if given.suffix in (".yaml", ".yml") and given.exists():
        return given
    path = CONFIGS / kind / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONFIGS / kind).glob("*.yaml"))
        raise SpecError(f"{kind}={name!r}: no {path}; known: {', '.join(known) or 'none'}")
    return path


def _load(kind: str, name: str) -> tuple[str, dict]:
    path = spec_path(kind, name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from err
    return path.stem, data


# ------------------------------------------------------------------------------------------------ figures
TASK_MAPPED_KEYS = ("y", "ylabel", "log_y", "ylim", "title")


@dataclass
class Panel:
    """One axes' settings, fully merged. ``y``, ``ylabel``, ``log_y``, ``ylim`` and ``title`` may map task
    name -> value, for a row whose metric depends on the column's task (val_sse, val_acc, val_ppl)."""

    settings: dict

    def for_task(self, task: str) -> "Panel":
        settings = dict(self.settings)
        for key in TASK_MAPPED_KEYS:
            if isinstance(settings.get(key), Mapping):
                settings[key] = settings[key].get(task)
        return Panel(settings)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.settings[key]
        except KeyError:
            raise AttributeError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


@dataclass
class FigureSpec:
    name: str
    title: str
    panels: list[list[Panel]]  # rows of columns
    panel_size: tuple[float, float]
    legend: str


@dataclass
class FigureFile:
    """A loaded configs/figure/<name>.yaml."""

    name: str
    results_dir: str
    style: dict
    tasks: dict[str, list[str]]
    figures: list[FigureSpec]

    def candidates(self, task: Any) -> list[str]:
        if isinstance(task, str):
            return list(self.tasks.get(task, [task]))
        return [t for slot in task for t in self.candidates(slot)]


def _merge(*layers: Mapping) -> dict:
    merged: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "where" and isinstance(value, Mapping):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return merged


def _check_panel(where: str, panel: dict) -> None:
    kind = panel.setdefault("kind", "curves")
    if kind not in PANEL_KINDS:
        raise SpecError(f"{where}: kind={kind!r} is not known; valid: {', '.join(PANEL_KINDS)}")
    if "task" not in panel:
        raise SpecError(f"{where}: no task (set it on the figure, a row or a column)")
    if "y" not in panel:
        raise SpecError(f"{where}: no y column to plot")
    source = panel.setdefault("source", "metrics")
    if source not in SOURCES:
        raise SpecError(f"{where}: source={source!r} must be one of {', '.join(SOURCES)}")
    if panel.get("band", "minmax") not in BANDS:
        raise SpecError(f"{where}: band={panel['band']!r} must be one of {', '.join(BANDS)}")
    try:
        smoother(panel.get("smooth"))
    except ValueError as err:
        raise SpecError(f"{where}: {err}") from None
    for i, curve in enumerate(panel.get("curves") or []):
        _check_keys(f"{where}: curves[{i}]", curve, CURVE_KEYS)
        if "optim" not in curve:
            raise SpecError(f"{where}: curves[{i}] needs an optim")
    _check_selection(where, panel)
    if panel.get("inset") is not None:
        _check_keys(f"{where}: inset", panel["inset"], INSET_KEYS)
        if panel["inset"].get("source", source) not in SOURCES:
            raise SpecError(f"{where}: inset source must be one of {', '.join(SOURCES)}")
    if kind == "sensitivity":
        for key in ("param", "thresholds"):
            if key not in panel:
                raise SpecError(f"{where}: a sensitivity panel needs {key!r}")
        if not isinstance(panel["thresholds"], Mapping):
            raise SpecError(f"{where}: thresholds must map task -> (optim or family -> threshold)")
    if kind == "trajectory" and not panel.get("x"):
        raise SpecError(f"{where}: a trajectory panel needs x (and y): two logged columns, drawn in step order")
    if kind == "heatmap":
        params = panel.get("params")
        if not isinstance(params, (list, tuple)) or len(params) != 2:
            raise SpecError(f"{where}: a heatmap panel needs params: [x key, y key] (two config keys)")
        if not isinstance(panel.get("thresholds"), Mapping):
            raise SpecError(f"{where}: a heatmap panel needs thresholds: task -> (optim or family -> threshold)")


def _check_selection(where: str, settings: Mapping) -> None:
    from optbench.selection import SELECT

    if settings.get("select", "all") not in SELECTIONS:
        raise SpecError(f"{where}: select={settings['select']!r} must be one of {', '.join(SELECTIONS)}")
    if settings.get("tuned_by", "best") not in SELECT:
        raise SpecError(f"{where}: tuned_by={settings['tuned_by']!r} must be one of {', '.join(SELECT)}")


def load_figure_spec(name: str) -> FigureFile:
    stem, data = _load("figure", name)
    _check_keys(f"figure {stem}", data, FIGURE_SPEC_KEYS)
    style = data.get("style") or {}
    _check_keys(f"figure {stem}: style", style, STYLE_KEYS)
    defaults = data.get("panel") or {}
    _check_keys(f"figure {stem}: panel", defaults, PANEL_KEYS)
    tasks = {k: [v] if isinstance(v, str) else list(v) for k, v in (data.get("tasks") or {}).items()}
    figures = []
    if not data.get("figures"):
        raise SpecError(f"figure {stem}: no figures")
    for fig_name, fig in data["figures"].items():
        where = f"figure {stem}: figures.{fig_name}"
        _check_keys(where, fig, FIGURE_KEYS)
        legend = fig.get("legend", "first")
        if legend not in LEGENDS:
            raise SpecError(f"{where}: legend={legend!r} must be one of {', '.join(LEGENDS)}")
        base = {k: v for k, v in fig.items() if k in PANEL_KEYS}
        rows, columns = fig.get("rows") or [{}], fig.get("columns") or [{}]
        grid = []
        for i, row in enumerate(rows):
            _check_keys(f"{where}.rows[{i}]", row, PANEL_KEYS)
            line = []
            for j, column in enumerate(columns):
                _check_keys(f"{where}.columns[{j}]", column, PANEL_KEYS)
                panel = _merge({"band": style.get("band", "minmax")}, defaults, base, row, column)
                _check_panel(f"{where} panel ({i}, {j})", panel)
                line.append(Panel(panel))
            grid.append(line)
        size = tuple(fig.get("panel_size", (4.2, 3.2)))
        figures.append(FigureSpec(fig_name, fig.get("suptitle", ""), grid, size, legend))
    return FigureFile(stem, str(data.get("results_dir", "results")), style, tasks, figures)


# ------------------------------------------------------------------------------------------------ tables
@dataclass
class TableFile:
    """A loaded configs/table/<name>.yaml."""

    name: str
    results_dir: str
    labels: dict[str, str]
    optims: list[str] | None
    where: dict
    tasks: dict[str, dict]
    columns: list[str]
    profile: dict | None
    speedup: dict | None
    style: dict | None = None  # labels_from's figure style: the profile's colours match the paper's figures
    selection: dict | None = None  # select: tuned keeps each optimizer's tuned setting (tuned_metric/_by/_over)


def load_table_spec(name: str) -> TableFile:
    stem, data = _load("table", name)
    _check_keys(f"table {stem}", data, TABLE_SPEC_KEYS)
    labels, style = {}, None
    if data.get("labels_from"):
        style = dict(load_figure_spec(data["labels_from"]).style)
        labels.update(style.get("labels") or {})
    labels.update(data.get("labels") or {})
    tasks = data.get("tasks") or {}
    for task, settings in tasks.items():
        _check_keys(f"table {stem}: tasks.{task}", settings, TABLE_TASK_KEYS)
        if "metric" not in settings:
            raise SpecError(f"table {stem}: tasks.{task} needs a metric (e.g. acc, loss, sse, ppl)")
    columns = list(data.get("columns") or TABLE_COLUMNS)
    for column in columns:
        if column not in TABLE_COLUMNS:
            raise SpecError(f"table {stem}: column {column!r} is not known; valid: {', '.join(TABLE_COLUMNS)}")
    profile = data.get("profile")
    if profile is not None:
        _check_keys(f"table {stem}: profile", profile, PROFILE_KEYS)
        if profile.get("time", "seconds") not in ("seconds", "steps"):
            raise SpecError(f"table {stem}: profile.time must be seconds or steps")
    speedup = data.get("speedup")
    if speedup is not None:
        _check_keys(f"table {stem}: speedup", speedup, SPEEDUP_KEYS)
        for key in ("baseline", "optims"):
            if key not in speedup:
                raise SpecError(f"table {stem}: speedup needs {key!r}")
        try:
            smoother(speedup.get("smooth"))
        except ValueError as err:
            raise SpecError(f"table {stem}: speedup: {err}") from None
    if not tasks and speedup is None:
        raise SpecError(f"table {stem}: nothing to tabulate (no tasks and no speedup)")
    _check_selection(f"table {stem}", data)
    selection = {k: data[k] for k in ("select", "tuned_metric", "tuned_by", "tuned_over") if k in data}
    return TableFile(stem, str(data.get("results_dir", "results")), labels, data.get("optims"),
                     dict(data.get("where") or {}), tasks, columns, profile, speedup, style, selection)
