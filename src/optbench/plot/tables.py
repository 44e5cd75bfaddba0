"""Result tables (Markdown and LaTeX) from run directories: per task and optimizer the final and best test
metric, the epoch of the best validation, the test metric there, time to a target (iterations and seconds of
training time), AlgoPerf's performance profile over tasks, and YellowFin's speedup over a baseline.

``build_tables`` computes every number (pure, testable); ``to_markdown`` / ``to_latex`` only format them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from optbench.plot import measures
from optbench.plot.measures import Speedup, Stat
from optbench.plot.runs import Run, RunGroup, group_runs, tuned_only
from optbench.plot.smoothing import smoother
from optbench.plot.specs import TableFile
from optbench.plot.style import Style, variant_parts
from optbench.results import higher_is_better
from optbench.rundir import FINAL, SETTLED

HEADERS = {"final": "final {test}", "best": "best {test}", "best_val_epoch": "best {val} epoch",
           "at_best_val": "{test} at best {val}", "target_steps": "iterations to {val} {op} {target}",
           "target_seconds": "seconds to {val} {op} {target}"}
DEFAULT_TAUS = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0)


@dataclass
class Row:
    label: str
    group: RunGroup
    cells: dict[str, Stat]

    @property
    def runs_note(self) -> str:
        counts = self.group.statuses()
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


@dataclass
class TaskTable:
    task: str
    metric: str
    higher: bool
    target: float | None
    target_column: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)

    def header(self, column: str) -> str:
        return HEADERS[column].format(test=f"test_{self.metric}", val=self.target_column if "target" in column
                                      else f"val_{self.metric}", op="≥" if self.higher else "≤",
                                      target=f"{self.target:g}" if self.target is not None else "?")


@dataclass
class Profile:
    time: str  # seconds | steps
    taus: list[float]
    tasks: list[str]
    fractions: dict[str, list[float]]  # optim label -> fraction of tasks per tau
    times: dict[str, dict[str, float]]  # task -> optim label -> time to target (inf = not reached)
    optims: dict[str, str] = field(default_factory=dict)  # optim label -> optimizer config name
    style: dict | None = None  # the figures' style, so the profile uses the same colour per optimizer


@dataclass
class SpeedupRow:
    task: str
    setting: str
    speedups: dict[str, Speedup]  # optim label -> speedup over the baseline


@dataclass
class Tables:
    name: str
    tasks: list[TaskTable]
    profile: Profile | None
    baseline: str | None
    speedups: list[SpeedupRow]


def _ordered(groups: Sequence[RunGroup], optims: Sequence[str] | None) -> list[RunGroup]:
    """In the spec's optimizer order; an optimizer's default settings before its variants."""
    def variant_key(group: RunGroup):
        return len(variant_parts(group.variant)), group.variant

    if not optims:
        return sorted(groups, key=lambda g: (g.optim, variant_key(g)))
    return [g for o in optims for g in sorted((g for g in groups if g.optim == o), key=variant_key)]


def _filtered(group: RunGroup, where: dict) -> RunGroup | None:
    runs = [r for r in group.runs if r.matches(where)]
    return RunGroup(group.task, group.optim, group.variant, runs) if runs else None


def run_table(groups: Sequence[RunGroup], labels: Sequence[str], metric: str, higher: bool,
              target_column: str, target: float | None) -> pd.DataFrame:
    """One row per run: its label, seed, status and every measure the table reports (NaN where a run has no
    value: not finished, or never reached the target)."""
    test, val = f"test_{metric}", f"val_{metric}"
    rows = []
    for group, label in zip(groups, labels):
        for run in group.runs:
            row = {"label": label, "seed": run.seed, "status": run.status,
                   "final": measures.final_value(run, test), "best": measures.best_value(run, test, higher),
                   "best_val_epoch": measures.best_epoch(run, val, higher),
                   "at_best_val": measures.value_at_best(run, test, val, higher)}
            if target is not None:
                row["target_steps"], row["target_seconds"] = measures.time_to_target(
                    run, target_column, target, higher)
            rows.append(row)
    return pd.DataFrame(rows)


def seed_stats(frame: pd.DataFrame, column: str) -> dict[str, Stat]:
    """Per label, the Stat of a measure over the seeds in ``frame`` (n = seeds with a finite value)."""
    values = frame[column].where(np.isfinite(frame[column]))
    agg = values.groupby(frame["label"], sort=False).agg(["mean", "std", "count", "size"])
    return {label: Stat(r["mean"], r["std"] if r["count"] > 1 else (0.0 if r["count"] else math.nan),
                        int(r["count"]), int(r["size"])) for label, r in agg.iterrows()}


def task_table(task: str, settings: dict, groups: Sequence[RunGroup], columns: Sequence[str], style: Style
               ) -> TaskTable:
    metric = settings["metric"]
    higher = bool(settings.get("higher_is_better", higher_is_better(metric)))
    target_column = f"{settings.get('target_split', 'val')}_{metric}"
    target = settings.get("target")
    table = TaskTable(task, metric, higher, None if target is None else float(target), target_column, list(columns))
    labels = style.group_labels(groups)
    runs = run_table(groups, labels, metric, higher, target_column, table.target)
    finished = runs[runs["status"].isin(FINAL)]
    settled = runs[runs["status"].isin(SETTLED)]  # a diverged run never reaches a target after
    cells = {name: seed_stats(finished, name) for name in ("final", "best", "best_val_epoch", "at_best_val")}
    if target is not None:
        cells.update({name: seed_stats(settled, name) for name in ("target_steps", "target_seconds")})
    empty = Stat.of([])
    for group, label in zip(groups, labels):
        table.rows.append(Row(label, group, {name: stats.get(label, empty) for name, stats in cells.items()}))
    return table


def build_tables(spec: TableFile, runs: Sequence[Run]) -> Tables:
    style = Style({"labels": spec.labels})
    by_task: dict[str, list[RunGroup]] = {}
    for group in group_runs(runs):
        by_task.setdefault(group.task, []).append(group)

    selection = spec.selection or {}

    def groups_of(task: str, optims, where: dict) -> list[RunGroup]:
        kept = [g for g in (_filtered(g, where) for g in _ordered(by_task.get(task, []), optims)) if g is not None]
        if selection.get("select") == "tuned":
            chosen = tuned_only(kept, selection.get("tuned_metric", "loss"), selection.get("tuned_by", "best"),
                                selection.get("tuned_over"))
            kept = [g for g in kept if g in chosen]
        return kept

    tables = []
    for task, settings in spec.tasks.items():
        groups = groups_of(task, spec.optims, {**spec.where, **(settings.get("where") or {})})
        if groups:
            tables.append(task_table(task, settings, groups, spec.columns, style))
    profile = _profile(spec, tables, style) if spec.profile is not None and tables else None
    if spec.speedup is None:
        return Tables(spec.name, tables, profile, None, [])
    speedups = _speedups(spec, list(by_task), groups_of, style)
    return Tables(spec.name, tables, profile, style.label(spec.speedup["baseline"]), speedups)


def _profile(spec: TableFile, tables: list, style: Style) -> Profile:
    """The performance profile over the tasks' tables; it compares the same optimizer settings across tasks, so
    the labels are made over all tables' groups (with ``select: tuned``, each optimizer at its own tuned setting
    per task)."""
    everywhere = [r.group for t in tables for r in t.rows]
    tuned = (spec.selection or {}).get("select") == "tuned"  # one tuned setting per task: the optimizer is the row
    labels = [style.label(g.optim) for g in everywhere] if tuned else style.group_labels(everywhere)
    global_labels = dict(zip(map(id, everywhere), labels))
    time = spec.profile.get("time", "seconds")
    key = "target_seconds" if time == "seconds" else "target_steps"
    times = {t.task: {global_labels[id(r.group)]: measures.profile_time(r.cells[key])
                      for r in t.rows if key in r.cells} for t in tables if t.target is not None}
    labels = list(dict.fromkeys(global_labels[id(r.group)] for t in tables for r in t.rows))
    taus = [float(t) for t in spec.profile.get("taus", DEFAULT_TAUS)]
    optims = {global_labels[id(g)]: g.optim for g in everywhere}
    return Profile(time, taus, list(times), measures.performance_profile(times, labels, taus), times, optims,
                   {**(spec.style or {}), "labels": spec.labels})


def _speedups(spec: TableFile, tasks: list[str], groups_of, style: Style) -> list[SpeedupRow]:
    """YellowFin's speedup table: iterations the baseline needs to its best smoothed loss / the optimizer's."""
    sp = spec.speedup
    column, transform = sp.get("column", "loss"), smoother(sp.get("smooth"))
    rows = []
    for task in sp.get("tasks") or tasks:
        for setting, where in (sp.get("settings") or {"": {}}).items():
            where = {**spec.where, **(where or {})}
            base = groups_of(task, [sp["baseline"]], where)
            if not base:
                continue
            base_curve = measures.mean_curve(base[0], column, transform)
            row = SpeedupRow(task, setting, {})
            others = groups_of(task, sp["optims"], where)
            for group, label in zip(others, style.group_labels(others)):
                row.speedups[label] = measures.speedup(base_curve, measures.mean_curve(group, column, transform))
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ formatting
def fmt_number(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4g}"


def fmt_stat(stat: Stat | None) -> str:
    if stat is None or stat.n == 0:
        return "—" if stat is None or stat.total == 0 else f"— (0/{stat.total})"
    text = fmt_number(stat.mean) + (f" ± {fmt_number(stat.std)}" if stat.n > 1 else "")
    return text + (f" ({stat.n}/{stat.total})" if stat.n < stat.total else "")


def fmt_speedup(s: Speedup) -> str:
    if not math.isfinite(s.ratio):
        return "not reached" if math.isfinite(s.loss) else "—"
    return f"{s.ratio:.2f}x ({s.steps:.0f} it)"


def _grids(tables: Tables) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) of every table, as plain strings shared by both formats."""
    out = []
    for t in tables.tasks:
        columns = [c for c in t.columns if c in t.rows[0].cells] if t.rows else []
        caption = f"{t.task}: {t.metric} ({'higher' if t.higher else 'lower'} is better)"
        header = ["optimizer", "runs"] + [t.header(c) for c in columns]
        rows = [[r.label, r.runs_note] + [fmt_stat(r.cells.get(c)) for c in columns] for r in t.rows]
        out.append((caption, header, rows))
    if tables.profile is not None:
        p = tables.profile
        caption = (f"performance profile: fraction of the {len(p.tasks)} tasks with a target ({', '.join(p.tasks)}) "
                   f"each optimizer reaches within tau x the fastest time to target ({p.time})")
        header = ["optimizer"] + [f"tau={tau:g}" for tau in p.taus]
        rows = [[label] + [f"{v:.2f}" for v in values] for label, values in p.fractions.items()]
        out.append((caption, header, rows))
    if tables.speedups:
        labels = list(dict.fromkeys(k for row in tables.speedups for k in row.speedups))
        caption = (f"speedup over {tables.baseline}: iterations {tables.baseline} needs to reach its lowest smoothed "
                   f"training loss / iterations the optimizer needs to reach that loss")
        header = ["task", "setting", f"{tables.baseline} lowest loss", f"{tables.baseline} iterations"] + labels
        rows = []
        for row in tables.speedups:
            first = next(iter(row.speedups.values()), None)
            loss = fmt_number(first.loss) if first else "—"
            base_steps = f"{first.baseline_steps:.0f}" if first and math.isfinite(first.baseline_steps) else "—"
            rows.append([row.task, row.setting, loss, base_steps]
                        + [fmt_speedup(row.speedups[k]) if k in row.speedups else "—" for k in labels])
        out.append((caption, header, rows))
    return out


def to_markdown(tables: Tables) -> str:
    lines = [f"# {tables.name}", ""]
    for caption, header, rows in _grids(tables):
        grid = pd.DataFrame(rows, columns=header)
        align = ["left"] + ["right"] * (len(header) - 1)
        lines += [f"**{caption}**", "", grid.to_markdown(index=False, disable_numparse=True, colalign=align), ""]
    if len(lines) == 2:
        lines.append("no runs found")
    lines.append("Mean ± sample std over seeds; (k/n): only k of n seeds have a value (not finished, diverged, "
                 "or never reached the target).")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                  "{": r"\{", "}": r"\}", "±": r"$\pm$", "≥": r"$\geq$", "≤": r"$\leq$", "—": "--", "~": r"\~{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(tables: Tables) -> str:
    """One booktabs table per section (needs \\usepackage{booktabs}); cells are escaped here (±, ≥ become math),
    so pandas writes them as they are."""
    parts = [f"% {tables.name}: generated by python -m optbench.plot table={tables.name}"]
    for caption, header, rows in _grids(tables):
        grid = pd.DataFrame([[latex_escape(c) for c in row] for row in rows],
                            columns=[latex_escape(h) for h in header])
        parts.append(grid.to_latex(index=False, escape=False, caption=latex_escape(caption), position="t",
                                   column_format="l" + "r" * (len(header) - 1)))
    return "\n".join(parts) + "\n"


def draw_profile(profile: Profile, out: Path) -> list[Path]:
    """The performance profile as a curve over tau from 1 to the largest tau of the spec."""
    import numpy as np

    from optbench.plot.figures import plt, save_figure, set_log_scale

    style = Style(profile.style)
    taus = np.geomspace(1.0, max(max(profile.taus), 1.0 + 1e-9), 200)
    dense = measures.performance_profile(profile.times, list(profile.fractions), list(taus))
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for label, fractions in dense.items():
        optim = profile.optims.get(label, label)  # colour and line style as in the paper's figures
        ax.step(taus, fractions, where="post", color=style.color(optim), linestyle=style.linestyle(optim),
                label=label)
    set_log_scale(ax, "x")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"tau (time to target in {profile.time}, relative to the fastest)")
    ax.set_ylabel("fraction of tasks")
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7,
               frameon=False)  # beside the axes: it never covers a line
    return save_figure(fig, out)


def write_tables(tables: Tables, plots_dir: Path) -> list[Path]:
    out = Path(plots_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{tables.name}.md", out / f"{tables.name}.tex"]
    paths[0].write_text(to_markdown(tables))
    paths[1].write_text(to_latex(tables))
    if tables.profile is not None and tables.profile.tasks:
        paths += draw_profile(tables.profile, out / f"{tables.name}_profile")
    return paths
