"""A paper's claims as checks over runs (configs/claims/<paper>.yaml), evaluated from the run directories.

A claim names the run sets it needs (overrides + seeds, exactly as ``python -m optbench.cli`` takes them), the
quantity (a metric's final value, at an epoch or after a number of iterations, the iterations to a target, a
speed-up between two optimizers), the comparison and its tolerance. Its verdict is computed here from the
recorded metrics.csv files, never written by hand: ``reproduced``, ``not reproduced`` (with the numbers) or
``not run`` (with why: the runs are absent or unfinished, the dataset is missing, the claim needs a GPU or the
full budget).

A run set's directories are found the way the trainer names them (the composed config's variant against the
task's and optimizer's defaults), so a claim reads exactly its runs and never a neighbour with other settings.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from optbench import results, rundir
from optbench.data.presence import missing_data
from optbench.plot.measures import first_reach
from optbench.plot.smoothing import moving_average
from optbench.run_config import compose_config, config_dir, default_run_config

# kind -> how many run sets it compares (None: two or more)
KINDS = {"final": 1, "ratio": 2, "less_than": 2, "ordering": None, "time_to_target": 1, "speedup": 2}
COMPARED = ("final", "ratio", "time_to_target", "speedup")  # the kinds that compare a number with ``value``
COMPARES = ("approx", "below", "above")
BUDGETS = ("quick", "full")
CLAIM_KEYS = {"required": {"id", "statement", "source", "kind", "runs", "metric", "where"},
              "optional": {"compare", "value", "tolerance", "epoch", "step", "target", "higher", "budget",
                           "log", "smooth", "substitute"}}
RUN_KEYS = {"required": {"overrides"}, "optional": {"seeds", "budgets"}}
FILE_KEYS = {"required": {"paper", "runs", "claims"}, "optional": {"title", "budgets", "figures"}}
FINISHED = ("finished", "reached")


class ClaimError(ValueError):
    """A claims file that does not say what a check needs (the message names the file and the key)."""


@dataclass
class Verdict:
    """One claim's outcome: what the paper says, what optbench measured, and the run directories read."""
    claim: dict
    verdict: str
    ours: str = ""
    why: str = ""
    paths: list = field(default_factory=list)


def claims_path(paper: str) -> Path:
    return config_dir() / "claims" / f"{paper}.yaml"


def _check_keys(node: Any, keys: Mapping, where: str) -> None:
    """Unknown or missing keys are errors that point at the file and the entry, not a KeyError later on."""
    if not isinstance(node, Mapping):
        raise ClaimError(f"{where}: expected a mapping, got {type(node).__name__}")
    missing = sorted(keys["required"] - set(node))
    unknown = sorted(set(node) - keys["required"] - keys["optional"])
    if missing:
        raise ClaimError(f"{where}: missing key(s) {', '.join(missing)}")
    if unknown:
        raise ClaimError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _check_claim(claim: Mapping, run_sets: Mapping, where: str) -> None:
    """A claim's kind, comparison, run sets and where must be ones this module can evaluate."""
    _check_keys(claim, CLAIM_KEYS, where)
    where = f"{where} (id {claim['id']})"
    if claim["kind"] not in KINDS:
        raise ClaimError(f"{where}: kind {claim['kind']!r} is not one of {', '.join(KINDS)}")
    runs = claim["runs"] if isinstance(claim["runs"], list) else [claim["runs"]]
    wanted = KINDS[claim["kind"]]
    if (wanted and len(runs) != wanted) or len(runs) < 2 and claim["kind"] == "ordering":
        raise ClaimError(f"{where}: runs: kind {claim['kind']} compares {wanted or '2 or more'} run set(s)")
    for name in runs:
        if name not in run_sets:
            raise ClaimError(f"{where}: runs: {name!r} is not a run set of the file's runs")
    _check_quantity(claim, where)
    if claim["kind"] in COMPARED:
        if claim.get("compare") not in COMPARES or "value" not in claim:
            raise ClaimError(f"{where}: compare (one of {', '.join(COMPARES)}) and value are needed")
        if claim["compare"] == "approx" and not set(claim.get("tolerance") or {}) & {"rel", "abs"}:
            raise ClaimError(f"{where}: tolerance: approx needs rel or abs")
    if claim["where"] not in ("cpu", "gpu"):
        raise ClaimError(f"{where}: where must be cpu or gpu")


def _check_quantity(claim: Mapping, where: str) -> None:
    """epoch or step (not both), a target where the kind needs one, a budget that exists."""
    if claim.get("epoch") is not None and claim.get("step") is not None:
        raise ClaimError(f"{where}: epoch and step: give one of them")
    if claim["kind"] == "time_to_target" and "target" not in claim:
        raise ClaimError(f"{where}: target: kind time_to_target needs the target value of {claim['metric']}")
    if claim.get("budget") is not None and claim["budget"] not in BUDGETS:
        raise ClaimError(f"{where}: budget must be one of {', '.join(BUDGETS)}")
    if claim.get("log", "metrics") not in ("metrics", "steps"):
        raise ClaimError(f"{where}: log must be metrics (metrics.csv, epoch ends) or steps (steps.csv)")
    smooth = claim.get("smooth")
    if smooth is not None and (claim.get("log") != "steps" or not isinstance(smooth, int) or smooth < 1):
        raise ClaimError(f"{where}: smooth is a window of N >= 1 logged steps, with log: steps")


def _check_budgets(budgets: Any, where: str) -> None:
    """Budget name -> a list of overrides, for the budgets there are."""
    for name, overrides in (budgets or {}).items():
        if name not in BUDGETS or not isinstance(overrides, list):
            raise ClaimError(f"{where}: {name!r}: budgets are {', '.join(BUDGETS)}, each a list of overrides")


def load_claims(paper: str, path: Path | None = None) -> dict:
    """The claims file of a paper, validated: run sets by name, each claim's runs a list of their names."""
    path = Path(path or claims_path(paper))
    if not path.exists():
        raise ClaimError(f"{path}: no claims file for paper {paper!r}")
    spec = yaml.safe_load(path.read_text()) or {}
    _check_keys(spec, FILE_KEYS, str(path))
    for name, run_set in spec["runs"].items():
        _check_keys(run_set, RUN_KEYS, f"{path}: runs.{name}")
        _check_budgets(run_set.get("budgets"), f"{path}: runs.{name}.budgets")
        run_set.setdefault("seeds", [0])
    _check_budgets(spec.get("budgets"), f"{path}: budgets")
    if not all(isinstance(f, list) and f for f in spec.get("figures") or []):
        raise ClaimError(f"{path}: figures: each entry is a list of `python -m optbench.plot` arguments")
    for i, claim in enumerate(spec["claims"]):
        _check_claim(claim, spec["runs"], f"{path}: claims[{i}]")
        claim["runs"] = claim["runs"] if isinstance(claim["runs"], list) else [claim["runs"]]
    spec.setdefault("budgets", {})
    return spec


def run_overrides(spec: Mapping, name: str, budget: str = "quick") -> list[str]:
    """A run set's overrides with the file's and then the run set's own for the budget (a quick budget may
    shorten runs, which gives them other directories)."""
    run_set = spec["runs"][name]
    return (list(run_set["overrides"]) + list((spec.get("budgets") or {}).get(budget) or [])
            + list((run_set.get("budgets") or {}).get(budget) or []))


@functools.lru_cache(maxsize=128)
def _composed(overrides: tuple[str, ...], data_dir_env: str | None) -> tuple[str, str, str, dict, str]:
    """(task, optim, variant, task config, data_dir) the trainer gives these overrides: the same composition
    train.py names runs by. The environment's OPTBENCH_DATA_DIR is part of the key, as it is of the config."""
    cfg = compose_config(list(overrides))
    variant = rundir.variant_name(cfg, default_run_config(cfg))
    return cfg["task"]["name"], cfg["optim"]["name"], variant, cfg["task"], str(cfg["data_dir"])


def _composition(spec: Mapping, name: str, budget: str) -> tuple[str, str, str, dict, str]:
    return _composed(tuple(run_overrides(spec, name, budget)), os.environ.get("OPTBENCH_DATA_DIR"))


def run_paths(spec: Mapping, name: str, results_dir: str | Path, budget: str = "quick") -> list[Path]:
    """The run directories (one per seed) a run set writes under results_dir."""
    task, optim, variant = _composition(spec, name, budget)[:3]
    return [rundir.run_path(results_dir, task, optim, variant, seed) for seed in spec["runs"][name]["seeds"]]


def data_missing(spec: Mapping, name: str, budget: str = "quick") -> str:
    """'' when the run set's dataset is on disk, else where it is expected and how to get it."""
    task_cfg, data_dir = _composition(spec, name, budget)[3:]
    return missing_data(task_cfg, data_dir)


def _unusable(rows: pd.DataFrame, metric: str, path: Path) -> str:
    """Why a run's rows cannot answer a claim ('' when they can)."""
    if not len(rows):
        return f"runs absent: {path}"
    if rows["status"].iloc[0] not in FINISHED:
        return f"run {rows['status'].iloc[0]}: {path}"
    if metric not in rows or rows[metric].isna().all():
        return f"no {metric} logged: {path}"
    return ""


def seed_tables(spec: Mapping, name: str, claim: Mapping, results_dir, budget: str
                ) -> tuple[list[pd.DataFrame], str, list[Path]]:
    """Each seed's rows of a run set in step order (metrics.csv, or steps.csv with ``log: steps``, its metric
    then a rolling mean over ``smooth`` logged steps), or why they cannot be read, and the run paths."""
    paths, metric = run_paths(spec, name, results_dir, budget), claim["metric"]
    steps = claim.get("log") == "steps"
    frame = (results.load_steps if steps else results.load)(results_dir, task=paths[0].parts[-4],
                                                            optim=paths[0].parts[-3])
    tables = []
    for path in paths:
        rows = frame[frame["path"] == str(path)] if len(frame) else frame
        why = _unusable(rows, metric, path)
        if why:
            return [], why, paths
        rows = rows.sort_values(["step", "epoch"] if steps else "epoch").copy()
        if claim.get("smooth"):
            rows[metric] = moving_average(rows[metric], int(claim["smooth"]))  # the figures' smoother
        tables.append(rows)
    return tables, "", paths


class Unanswered(LookupError):
    """The runs finished but do not reach the epoch or iteration the claim reads (reported as not run)."""


def point(rows: pd.DataFrame, claim: Mapping) -> float:
    """The metric at ``epoch``, after ``step`` iterations (the first logged row at or past it: an epoch end of
    metrics.csv, a logged step of steps.csv), else the last."""
    metric = claim["metric"]
    if claim.get("epoch") is not None:
        rows = rows[rows["epoch"] == claim["epoch"]]
    elif claim.get("step") is not None:
        rows = rows[rows["step"] >= claim["step"]].head(1)
    rows = rows[rows[metric].notna()]
    if not len(rows):
        at = f"epoch {claim['epoch']}" if claim.get("epoch") is not None else f"step {claim.get('step')}"
        raise Unanswered(f"{at} not reached")
    return float(rows[metric].iloc[-1])


def higher_is_better(claim: Mapping) -> bool:
    return bool(claim.get("higher", "acc" in claim["metric"]))


def mean_curve(tables: Sequence[pd.DataFrame], metric: str) -> pd.Series:
    """The seed mean of a metric against iterations (epoch ends), skipping a seed's missing value."""
    columns = [t.drop_duplicates("step", keep="last").set_index("step")[metric] for t in tables]
    return pd.concat(columns, axis=1).mean(axis=1).sort_index()


def iterations_to(curve: pd.Series, target: float, higher: bool) -> float:
    """The first iteration count at which the curve reaches the target (inf if it never does), by the same rule
    as the figures' and tables' time-to-target (plot.measures.first_reach)."""
    step = first_reach(curve.index, curve.to_numpy(), target, higher)
    return math.inf if math.isnan(step) else step


def compare(value: float, claim: Mapping) -> bool:
    """approx: within rel or abs of the paper's value (either suffices); below / above: strictly."""
    target = float(claim["value"])
    if claim["compare"] == "below":
        return value < target
    if claim["compare"] == "above":
        return value > target
    tol = claim.get("tolerance") or {}
    return bool(np.isclose(value, target, rtol=float(tol.get("rel", 0.0)), atol=float(tol.get("abs", 0.0))))


def spread(values: np.ndarray) -> str:
    """mean ± std over seeds (n seeds), the form every number of the report takes."""
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return f"{values.mean():.4g} ± {std:.2g} (n={len(values)})"


def _points(claim: Mapping, sets: Sequence[Sequence[pd.DataFrame]]) -> tuple[bool, str]:
    """final, ratio, less_than, ordering: on the seed means of each run set's point values."""
    values = [np.array([point(t, claim) for t in tables]) for tables in sets]
    means = [float(v.mean()) for v in values]
    if claim["kind"] == "final":
        return compare(means[0], claim), spread(values[0])
    if claim["kind"] == "ratio":
        ratio = means[0] / means[1]
        return compare(ratio, claim), f"{ratio:.4g} = {spread(values[0])} / {spread(values[1])}"
    shown = "; ".join(f"{n}: {spread(v)}" for n, v in zip(claim["runs"], values))
    return all(a < b for a, b in zip(means, means[1:])), shown  # less_than and ordering: ascending


def _steps(n: float) -> str:
    return "never" if math.isinf(n) else f"{n:.0f}"


def _iterations(claim: Mapping, sets: Sequence[Sequence[pd.DataFrame]]) -> tuple[bool, str]:
    """time_to_target and speedup: iterations until the seed-mean curve reaches the target."""
    higher, metric = higher_is_better(claim), claim["metric"]
    curves = [mean_curve(tables, metric) for tables in sets]
    base = curves[0].dropna()
    target = float(claim["target"]) if "target" in claim else float(base.max() if higher else base.min())
    reach = f"{metric} {'≥' if higher else '≤'} {target:.4g}"
    steps = [iterations_to(curve, target, higher) for curve in curves]
    if claim["kind"] == "time_to_target":
        return compare(steps[0], claim), f"{_steps(steps[0])} iterations to {reach}"
    ratio = steps[0] / steps[1] if steps[1] > 0 else math.inf
    ratio = math.nan if math.isinf(steps[0]) else ratio  # the baseline never reaching its target: no speed-up
    shown = f"{ratio:.3g}x: {_steps(steps[0])} / {_steps(steps[1])} iterations to {reach}"
    return (not math.isnan(ratio) and compare(ratio, claim)), shown


def _not_here(spec: Mapping, claim: Mapping, where: str, budget: str) -> str:
    """Why a claim cannot be evaluated on this machine under this budget ('' when it can)."""
    if claim["where"] == "gpu" and where != "gpu":
        return "needs a GPU (where=gpu)"
    for name in claim["runs"]:  # before the budget: a missing dataset is what a user can act on first
        missing = data_missing(spec, name, claim.get("budget") or budget)
        if missing:
            return f"data missing: {missing}"
    if claim.get("budget") not in (None, budget):
        return f"needs budget={claim['budget']}"
    return ""


def evaluate(spec: Mapping, claim: Mapping, results_dir: str | Path, where: str = "cpu",
             budget: str = "quick") -> Verdict:
    """The verdict of one claim from the runs under results_dir: computed, never taken from the file."""
    why = _not_here(spec, claim, where, budget)
    if why:
        return Verdict(dict(claim), "not run", why=why)
    sets, paths = [], []
    for name in claim["runs"]:
        tables, why, run_dirs = seed_tables(spec, name, claim, results_dir, budget)
        paths += run_dirs
        if why:
            return Verdict(dict(claim), "not run", why=why, paths=paths)
        sets.append(tables)
    try:
        holds, ours = (_iterations if claim["kind"] in ("time_to_target", "speedup") else _points)(claim, sets)
    except Unanswered as err:
        return Verdict(dict(claim), "not run", why=str(err), paths=paths)
    return Verdict(dict(claim), "reproduced" if holds else "not reproduced", ours=ours, paths=paths)


def evaluate_all(spec: Mapping, results_dir: str | Path, where: str = "cpu", budget: str = "quick") -> list[Verdict]:
    return [evaluate(spec, claim, results_dir, where, budget) for claim in spec["claims"]]


def paper_number(claim: Mapping) -> str:
    """The paper's side of a claim as the report's table shows it."""
    if claim["kind"] in ("less_than", "ordering"):
        return " < ".join(claim["runs"])
    tol = claim.get("tolerance") or {}
    shown = {"approx": "≈", "below": "<", "above": ">"}[claim["compare"]] + f" {claim['value']}"
    if claim["compare"] == "approx":
        shown += " (" + ", ".join(f"{k} {v}" for k, v in tol.items()) + ")"
    reach = f"{claim['metric']} {'≥' if higher_is_better(claim) else '≤'} "
    if claim["kind"] == "time_to_target":
        return f"iterations to {reach}{claim['target']} {shown}"
    if claim["kind"] == "speedup":
        target = claim.get("target", f"{claim['runs'][0]}'s best")
        return f"speed-up of {claim['runs'][1]} over {claim['runs'][0]} to {reach}{target} {shown}"
    return shown if claim["kind"] == "final" else f"{' / '.join(claim['runs'])} {shown}"
