"""A paper's claims as checks over runs (configs/claims/<paper>.yaml), evaluated from the run directories.

A claim names the run sets it needs (overrides + seeds, exactly as ``python -m optbench.cli`` takes them), the
quantity (a metric's final value, or at an epoch), the comparison and its tolerance. Its verdict is computed
here from the recorded metrics.csv files, never written by hand: ``reproduced``, ``not reproduced`` (with the
numbers) or ``not run`` (with why: the runs are absent or unfinished, or the claim needs a GPU).

A run set's directories are found the way the trainer names them (the composed config's variant against the
task's and optimizer's defaults), so a claim reads exactly its runs and never a neighbour with other settings.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from optbench import results, rundir
from optbench.run_config import compose_config, config_dir, default_run_config

KINDS = {"final": 1, "ratio": 2, "less_than": 2, "ordering": None}  # kind -> how many run sets it compares
COMPARES = ("approx", "below", "above")
CLAIM_KEYS = {"required": {"id", "statement", "source", "kind", "runs", "metric", "where"},
              "optional": {"compare", "value", "tolerance", "epoch", "substitute"}}
RUN_KEYS = {"required": {"overrides"}, "optional": {"seeds"}}
FILE_KEYS = {"required": {"paper", "runs", "claims"}, "optional": {"title", "budgets"}}
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
    if claim["kind"] in ("final", "ratio"):
        if claim.get("compare") not in COMPARES or "value" not in claim:
            raise ClaimError(f"{where}: compare (one of {', '.join(COMPARES)}) and value are needed")
        if claim["compare"] == "approx" and not set(claim.get("tolerance") or {}) & {"rel", "abs"}:
            raise ClaimError(f"{where}: tolerance: approx needs rel or abs")
    if claim["where"] not in ("cpu", "gpu"):
        raise ClaimError(f"{where}: where must be cpu or gpu")


def load_claims(paper: str, path: Path | None = None) -> dict:
    """The claims file of a paper, validated: run sets by name, each claim's runs a list of their names."""
    path = Path(path or claims_path(paper))
    if not path.exists():
        raise ClaimError(f"{path}: no claims file for paper {paper!r}")
    spec = yaml.safe_load(path.read_text()) or {}
    _check_keys(spec, FILE_KEYS, str(path))
    for name, run_set in spec["runs"].items():
        _check_keys(run_set, RUN_KEYS, f"{path}: runs.{name}")
        run_set.setdefault("seeds", [0])
    for i, claim in enumerate(spec["claims"]):
        _check_claim(claim, spec["runs"], f"{path}: claims[{i}]")
        claim["runs"] = claim["runs"] if isinstance(claim["runs"], list) else [claim["runs"]]
    spec.setdefault("budgets", {})
    return spec


def run_overrides(spec: Mapping, name: str, budget: str = "quick") -> list[str]:
    """A run set's overrides with the budget's appended (a quick budget may shorten runs: other directories)."""
    return list(spec["runs"][name]["overrides"]) + list((spec.get("budgets") or {}).get(budget) or [])


@functools.lru_cache(maxsize=128)
def _run_identity(overrides: tuple[str, ...]) -> tuple[str, str, str]:
    """(task, optim, variant) the trainer gives these overrides: the same composition train.py names runs by."""
    cfg = compose_config(list(overrides))
    return cfg["task"]["name"], cfg["optim"]["name"], rundir.variant_name(cfg, default_run_config(cfg))


def run_paths(spec: Mapping, name: str, results_dir: str | Path, budget: str = "quick") -> list[Path]:
    """The run directories (one per seed) a run set writes under results_dir."""
    task, optim, variant = _run_identity(tuple(run_overrides(spec, name, budget)))
    return [rundir.run_path(results_dir, task, optim, variant, seed) for seed in spec["runs"][name]["seeds"]]


def run_values(spec: Mapping, name: str, claim: Mapping, results_dir, budget: str) -> tuple[np.ndarray, str, list]:
    """The claim's metric for each seed of a run set (final, or at ``epoch``), or why it cannot be read."""
    paths = run_paths(spec, name, results_dir, budget)
    frame = results.load(results_dir, task=paths[0].parts[-4], optim=paths[0].parts[-3])
    frame = frame[frame["path"].isin([str(p) for p in paths])] if len(frame) else frame
    values = []
    for path in paths:
        rows = frame[frame["path"] == str(path)] if len(frame) else frame
        if not len(rows):
            return np.array([]), f"runs absent: {path}", paths
        if rows["status"].iloc[0] not in FINISHED:
            return np.array([]), f"run {rows['status'].iloc[0]}: {path}", paths
        if claim["metric"] not in rows or rows[claim["metric"]].isna().all():
            return np.array([]), f"no {claim['metric']} logged: {path}", paths
        rows = rows.sort_values("epoch")
        rows = rows[rows["epoch"] == claim["epoch"]] if claim.get("epoch") is not None else rows
        if not len(rows):
            return np.array([]), f"epoch {claim['epoch']} not reached: {path}", paths
        values.append(float(rows[claim["metric"]].iloc[-1]))
    return np.array(values), "", paths


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


def _outcome(claim: Mapping, means: Sequence[float], sets: Sequence[np.ndarray]) -> tuple[bool, str]:
    """Whether the claim holds on the seed means, and optbench's numbers as the report shows them."""
    names = claim["runs"]
    if claim["kind"] == "final":
        return compare(means[0], claim), spread(sets[0])
    if claim["kind"] == "ratio":
        ratio = means[0] / means[1]
        return compare(ratio, claim), f"{ratio:.4g} = {spread(sets[0])} / {spread(sets[1])}"
    shown = "; ".join(f"{n}: {spread(v)}" for n, v in zip(names, sets))
    return all(a < b for a, b in zip(means, means[1:])), shown  # less_than and ordering: ascending


def evaluate(spec: Mapping, claim: Mapping, results_dir: str | Path, where: str = "cpu",
             budget: str = "quick") -> Verdict:
    """The verdict of one claim from the runs under results_dir: computed, never taken from the file."""
    if claim["where"] == "gpu" and where != "gpu":
        return Verdict(dict(claim), "not run", why="needs a GPU (where=gpu)")
    sets, paths = [], []
    for name in claim["runs"]:
        values, why, run_dirs = run_values(spec, name, claim, results_dir, budget)
        paths += run_dirs
        if why:
            return Verdict(dict(claim), "not run", why=why, paths=paths)
        sets.append(values)
    holds, ours = _outcome(claim, [float(v.mean()) for v in sets], sets)
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
    return shown if claim["kind"] == "final" else f"{' / '.join(claim['runs'])} {shown}"
