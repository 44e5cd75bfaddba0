"""Each optimizer at its tuned setting: for each (task, optimizer), the setting whose validation metric,
averaged over its seeds, is best: the final value or the best over training (``select=final|best``). Runs
under different conditions (the trainer's staleness, amp, grad_clip) are chosen among separately.

A diverged seed scores as the worst possible value, so a setting that diverged on any seed loses to every one
that did not; runs still going are left out. Ties go to the setting with fewer diverged seeds, then to the
smaller values (in the order of the varying keys). The test metric is reported at the same epoch (the final
one, or the best-validation one), mean and sample std over seeds.

    python -m optbench.selection results_dir=DIR [task=NAME] [metric=loss] [select=best] [confirm_seeds=N]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from optbench.errors import ConfigError
from optbench.results import higher_is_better
from optbench.rundir import SETTLED

SELECT = ("best", "final")


def score_run(rows: pd.DataFrame, status: str, metric: str = "loss", select: str = "best") -> tuple[float, float]:
    """(validation score, test metric at the same epoch) of one run's metrics rows, in epoch order. A diverged
    run (or one without a finite validation value) scores the worst value, its test metric NaN."""
    if select not in SELECT:
        raise ConfigError(f"select={select!r} is not known; valid: {', '.join(SELECT)}")
    val, test = f"val_{metric}", f"test_{metric}"
    higher = higher_is_better(metric)
    score = rows[val].where(rows[val].abs() != math.inf).dropna() if val in rows else pd.Series(dtype=float)
    if status == "diverged" or score.empty:
        return (-math.inf if higher else math.inf), math.nan
    at = score.index[-1] if select == "final" else (score.idxmax() if higher else score.idxmin())
    return float(score[at]), float(rows[test][at]) if test in rows else math.nan


def run_scores(metrics: pd.DataFrame, metric: str = "loss", select: str = "best") -> pd.DataFrame:
    """One row per settled run of ``results.load``'s rows: identity, its validation score and the test metric
    at the same epoch (``score_run``)."""
    if select not in SELECT:
        raise ConfigError(f"select={select!r} is not known; valid: {', '.join(SELECT)}")
    if metrics.empty or f"val_{metric}" not in metrics:
        return pd.DataFrame(columns=["task", "optim", "variant", "seed", "status", "path", "val", "test"])
    rows = []
    for path, run in metrics[metrics["status"].isin(SETTLED)].sort_values("epoch").groupby("path"):
        first = run.iloc[0]
        value, at_test = score_run(run, first["status"], metric, select)
        rows.append({**{k: first[k] for k in ("task", "optim", "variant", "seed", "status")}, "path": path,
                     "val": value, "test": at_test})
    return pd.DataFrame(rows)


def objective(run_dir, metric: str = "loss", select: str = "best") -> float:
    """A finished run's validation score, for a sweeper that optimises (Optuna): ``score_run`` of its files."""
    from optbench import rundir, runlock
    from optbench.results import read_log

    status = runlock.effective_status(run_dir, rundir.read_summary(run_dir))
    return score_run(read_log(run_dir / rundir.METRICS), status, metric, select)[0]


def varying_settings(index: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """Per (task, optim), the config keys (optim.*, task.*, the trainer's variant keys) whose values differ
    between its runs: what a setting of that optimizer is told apart by."""
    from optbench.rundir import VARIANT_TRAINER_KEYS

    trainer = tuple(f"trainer.{k}" for k in VARIANT_TRAINER_KEYS)  # staleness, grad_clip, amp name variants too
    out = {}
    for key, runs in index.groupby(["task", "optim"]):
        columns = [c for c in runs.columns if (c.startswith(("optim.", "task.")) or c in trainer)
                   and c not in ("optim.name", "task.name")]
        out[key] = [c for c in columns if runs[c].astype(str).nunique() > 1]
    return out


def _conditions(keys: Sequence[str]) -> list[str]:
    """The trainer's variant keys among ``keys``: conditions an optimizer is compared under (asynchrony's
    staleness, mixed precision, clipping), chosen within, never against each other."""
    return [k for k in keys if k.startswith("trainer.")]


def _by_condition(runs: pd.DataFrame, keys: Sequence[str]):
    conditions = _conditions(keys)
    return runs.groupby(conditions, dropna=False, sort=True) if conditions else [((), runs)]


def the_grid(index: pd.DataFrame, keys: dict, over: Sequence[str]) -> set[str]:
    """The run paths of each (task, optim)'s grid over the keys ``over`` (e.g. optim.lr), per condition: where
    its runs also vary in other keys (a damping study beside a learning-rate grid), the runs that share the
    other keys' values and cover the most values of ``over`` (then the most runs)."""
    kept = set()
    for (task, optim), runs in index.groupby(["task", "optim"]):
        varying = keys.get((task, optim), [])
        others = [k for k in varying if k not in over and k not in _conditions(varying)]
        for _, part in _by_condition(runs, varying):
            if not others:
                kept.update(part["path"])
                continue
            grid_keys = [k for k in over if k in part]
            candidates = [p for _, p in part.groupby(others, dropna=False, sort=True)]
            best = max(candidates, key=lambda p: (len(p[grid_keys].astype(str).drop_duplicates()), len(p)))
            kept.update(best["path"])
    return kept


def settings_table(metrics: pd.DataFrame, metric: str = "loss", select: str = "best",
                   over: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (task, optim, variant): its varying settings, seeds, diverged seeds, validation score and
    test metric (mean and sample std over seeds), and ``rank`` within its (task, optim) (1 = selected).
    ``over``: choose only within each optimizer's grid over these keys (``the_grid``)."""
    scores = run_scores(metrics, metric, select)
    if scores.empty:
        return scores
    index = metrics.drop_duplicates("path").set_index("path")
    keys = varying_settings(index.reset_index())
    if over:
        scores = scores[scores["path"].isin(the_grid(index.reset_index(), keys, over))]
        keys = varying_settings(index.loc[scores["path"]].reset_index())
    rows = []
    for (task, optim, variant), runs in scores.groupby(["task", "optim", "variant"], sort=True):
        first = index.loc[runs["path"].iloc[0]]
        setting = {k: first[k] for k in keys.get((task, optim), [])}
        finite = runs["val"].where(runs["val"].abs() != math.inf)
        rows.append({"task": task, "optim": optim, "variant": variant, "path": runs["path"].iloc[0], **setting,
                     "setting": ", ".join(f"{k.removeprefix('optim.')}={_fmt(v)}" for k, v in setting.items())
                     or variant, "seeds": len(runs), "diverged": int((runs["status"] == "diverged").sum()),
                     "val": runs["val"].mean(), "val_std": finite.std(ddof=1), "test": runs["test"].mean(),
                     "test_std": runs["test"].std(ddof=1)})
    table = pd.DataFrame(rows)
    return _ranked(table, keys, higher_is_better(metric))


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _ranked(table: pd.DataFrame, keys: Mapping, higher: bool) -> pd.DataFrame:
    """``rank`` per (task, optim, condition): best mean validation first, then fewer diverged seeds, then
    smaller values."""
    table = table.assign(_score=-table["val"] if higher else table["val"])
    ranked = []
    for (task, optim), runs in table.groupby(["task", "optim"], sort=True):
        varying = [k for k in keys.get((task, optim), []) if k in runs]
        for _, part in _by_condition(runs, varying):
            part = part.sort_values(["_score", "diverged"] + varying, kind="stable", key=lambda c: c.map(_sortable))
            ranked.append(part.assign(rank=range(1, len(part) + 1)))
    return pd.concat(ranked, ignore_index=True).drop(columns="_score")


def _sortable(value: Any) -> Any:
    return str(value) if isinstance(value, (tuple, list)) else value


def select_tuned(metrics: pd.DataFrame, metric: str = "loss", select: str = "best",
                 over: Sequence[str] | None = None) -> pd.DataFrame:
    """The selected setting of every (task, optim): the rank-1 rows of ``settings_table``."""
    table = settings_table(metrics, metric, select, over)
    if table.empty:
        return table
    chosen = table[table["rank"] == 1].reset_index(drop=True)
    return chosen.assign(edge=[_edges(row, table) for row in chosen.to_dict("records")])


def _edges(row: Mapping, table: pd.DataFrame) -> str:
    """The numeric settings of a chosen row that sit at the end of what was tried (a grid to widen)."""
    same = table[(table["task"] == row["task"]) & (table["optim"] == row["optim"])]
    edges = []
    for key in (k for k in same.columns if k.startswith(("optim.", "task."))):
        values = pd.to_numeric(same[key], errors="coerce").dropna()
        value = row.get(key)
        if values.nunique() > 1 and isinstance(value, (int, float)) and value in (values.min(), values.max()):
            edges.append(key.removeprefix("optim."))
    return ", ".join(edges)


# ------------------------------------------------------------------------------------------------ output
def tuned_frames(chosen: pd.DataFrame, metric: str, select: str) -> dict[str, pd.DataFrame]:
    """Per task, the chosen setting of each optimizer with its validation and test metric (mean ± std)."""
    frames = {}
    for task, rows in chosen.groupby("task", sort=True):
        frames[task] = pd.DataFrame({
            "optimizer": rows["optim"],
            "chosen setting": [f"{t} ({e} at the grid's edge)" if e else t for t, e in zip(rows["setting"],
                                                                                           rows["edge"])],
            "seeds": [f"{s}" + (f" ({d} diverged)" if d else "") for s, d in zip(rows["seeds"], rows["diverged"])],
            f"{select} val_{metric}": [_pm(m, s) for m, s in zip(rows["val"], rows["val_std"])],
            f"test_{metric} there": [_pm(m, s) for m, s in zip(rows["test"], rows["test_std"])]})
    return frames


def _caption(task: str, metric: str, select: str) -> str:
    return f"{task}: each optimizer at its setting with the {select} val_{metric} (mean over seeds)"


def tuned_markdown(chosen: pd.DataFrame, metric: str, select: str) -> str:
    if chosen.empty:
        return "no settled runs to choose from"
    return "\n\n".join(f"### {_caption(task, metric, select)}\n\n" + frame.to_markdown(
        index=False, disable_numparse=True, colalign=("left", "left", "right", "right", "right"))
        for task, frame in tuned_frames(chosen, metric, select).items())


def tuned_latex(chosen: pd.DataFrame, metric: str, select: str) -> str:
    from optbench.plot.tables import latex_escape

    parts = [f"% generated by python -m optbench.plot table=tuned metric={metric} select={select}"]
    for task, frame in tuned_frames(chosen, metric, select).items():
        frame = frame.apply(lambda column: column.map(lambda c: latex_escape(str(c)))).rename(columns=latex_escape)
        parts.append(frame.to_latex(index=False, escape=False, caption=latex_escape(_caption(task, metric, select)),
                                    position="t", column_format="llrrr"))
    return "\n".join(parts) + "\n"


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "diverged" if mean in (math.inf, -math.inf) else "—"
    return f"{mean:.4g}" + (f" ± {std:.2g}" if math.isfinite(std) else "")


def confirm_commands(chosen: pd.DataFrame, results_dir: str, seeds: int) -> list[list[str]]:
    """The Hydra multiruns that rerun each chosen setting on seeds 0..seeds-1: every optim/task/trainer value
    its runs changed from the (task, optim) defaults, so they land in the same run directory (the seeds
    already run are done and skipped)."""
    from optbench.results import read_config
    from optbench.run_config import compose_config

    commands = []
    for row in chosen.to_dict("records"):
        config = read_config(Path(row["path"]))
        defaults = compose_config([f"task={row['task']}", f"optim={row['optim']}"])
        changed = _changed(config, defaults)
        commands.append(["-m", f"task={row['task']}", f"optim={row['optim']}", *changed,
                         "seed=" + ",".join(str(s) for s in range(seeds)), f"results_dir={results_dir}"])
    return commands


def _changed(config: Mapping, defaults: Mapping) -> list[str]:
    from optbench.rundir import VARIANT_TRAINER_KEYS, flatten

    new, old = flatten({k: config.get(k, {}) for k in ("optim", "task")}), \
        flatten({k: defaults.get(k, {}) for k in ("optim", "task")})
    out = [f"{k}={_override(v)}" for k, v in new.items() if k in old and v != old[k]]
    trainer, base = config.get("trainer", {}), defaults.get("trainer", {})
    return out + [f"trainer.{k}={_override(trainer[k])}" for k in VARIANT_TRAINER_KEYS
                  if k in trainer and trainer[k] != base.get(k)]


def _override(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(_override(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def main(argv: list[str]) -> int:
    import subprocess
    import sys

    from optbench import results

    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    args = {"results_dir": "results", "task": None, "optim": None, "metric": "loss", "select": "best",
            "confirm_seeds": "0"}
    extra = [a for a in argv if a.split("=", 1)[0] not in args]
    if any("=" not in a for a in extra):
        print(f"unknown argument {extra[0]!r}; usage: {__doc__.strip().splitlines()[-1].strip()}", file=sys.stderr)
        return 2
    args.update(a.split("=", 1) for a in argv if a.split("=", 1)[0] in args)
    metrics = results.load(args["results_dir"], task=args["task"], optim=args["optim"])
    try:
        chosen = select_tuned(metrics, args["metric"], args["select"])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(tuned_markdown(chosen, args["metric"], args["select"]))
    for command in confirm_commands(chosen, args["results_dir"], int(args["confirm_seeds"])) \
            if int(args["confirm_seeds"]) else []:
        print("optbench: confirming: python main.py " + " ".join(command + extra), flush=True)
        subprocess.run([sys.executable, "-m", "optbench.cli", *command, *extra], check=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
