"""python -m optbench.reproduce paper=NAME [where=cpu|gpu] [budget=quick|full] [results_dir=results/reproduce]
[reports_dir=reports] [data_dir=PATH] [jobs=N] [figures=true|false] [runner=local|hydra] [launcher=NAME]: run
the runs a paper's claims need, evaluate every claim, draw the paper's figures, write
reports/<paper>.{md,html,json}.

Runs go through the ordinary trainer (optbench.train.run), so a second call resumes or skips what is done:
runner=local trains them in ``jobs`` worker processes; runner=hydra as one Hydra multirun per run set
(``python -m optbench.cli -m ...``, ``jobs`` at a time) on the launcher named (joblib, submitit_slurm, ...). Only claims that can run here are run: a ``where: gpu``
claim on a CPU, a claim of the other budget, and a claim whose dataset is not on disk are reported ``not run``
with why, and their runs are not started.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

from optbench import claims as c
from optbench import reports

ARGS = {"paper": None, "where": "cpu", "budget": "quick", "results_dir": "results/reproduce", "reports_dir": "reports",
        "data_dir": None, "jobs": str(os.cpu_count() or 1), "figures": "true", "runner": "local", "launcher": None}

RUNNERS = ("local", "hydra")


def needed_run_sets(spec: Mapping, where: str, budget: str = "quick") -> list[str]:
    """The run sets of the claims that can run here (device, budget, data), in file order, each once."""
    names: list[str] = []
    for claim in spec["claims"]:
        if claim["where"] == "gpu" and where != "gpu" or claim.get("budget") not in (None, budget):
            continue
        if not any(c.data_missing(spec, n, budget) for n in claim["runs"]):
            names += [n for n in claim["runs"] if n not in names]
    return names


def run_command(spec: Mapping, name: str, results_dir: str, budget: str) -> list[str]:
    """One multirun over a run set's seeds, with the budget's overrides (the trainer skips finished runs)."""
    seeds = ",".join(str(s) for s in spec["runs"][name]["seeds"])
    return [sys.executable, "-m", "optbench.cli", "-m", *c.run_overrides(spec, name, budget), f"seed={seeds}",
            f"results_dir={results_dir}", "trainer.progress=false"]


def _run_one(spec: Mapping, name: str, args: Mapping) -> None:
    """A run set's multirun; a failure is printed and left to its claims' verdicts (not run), not raised."""
    command = run_command(spec, name, args["results_dir"], args["budget"])
    if args["launcher"]:
        command.insert(4, f"hydra/launcher={args['launcher']}")
    start = time.perf_counter()
    done = subprocess.run(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    took = time.perf_counter() - start
    if done.returncode:
        print(f"optbench.reproduce: run set {name} failed after {took:.0f} s:\n{done.stderr[-2000:]}",
              file=sys.stderr, flush=True)
    else:
        print(f"optbench.reproduce: {name} ({' '.join(command[4:-3])}) done in {took:.0f} s", flush=True)


def train_one(overrides: Sequence[str]) -> tuple[bool, str, float]:
    """One run through the ordinary trainer (optbench.train.run) in this process: (ok, run dir or error, s).
    The trainer resumes an interrupted run and skips a finished one, as from the command line."""
    from optbench.run_config import compose_config
    from optbench.train import run

    start = time.perf_counter()
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return True, str(run(compose_config(list(overrides)))), time.perf_counter() - start
    except Exception as err:  # a failed run is reported by its claims (not run), the others go on
        return False, f"{type(err).__name__}: {err}", time.perf_counter() - start


def run_local(spec: Mapping, names: Sequence[str], args: Mapping) -> None:
    """Every run of the run sets in ``jobs`` worker processes that each import torch once and train run after
    run (a process per run set costs seconds of start-up each, more than most of these runs)."""
    items = [[*c.run_overrides(spec, name, args["budget"]), f"seed={seed}", f"results_dir={args['results_dir']}",
              "trainer.progress=none"] for name in names for seed in spec["runs"][name]["seeds"]]
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads or CUDA
    with ProcessPoolExecutor(max_workers=max(1, min(int(args["jobs"]), len(items))), mp_context=context) as pool:
        for item, (ok, what, took) in zip(items, pool.map(train_one, items)):
            shown = " ".join(o for o in item if not o.startswith(("results_dir=", "trainer.progress=")))
            print(f"optbench.reproduce: {shown}: {what if ok else 'FAILED: ' + what} ({took:.0f} s)", flush=True)


def run_all(spec: Mapping, args: Mapping) -> None:
    """Each needed run set: in local worker processes, or (runner=hydra) one Hydra multirun per run set on the
    configured launcher (``launcher=submitit_slurm`` ...), ``jobs`` run sets at a time."""
    names = needed_run_sets(spec, args["where"], args["budget"])
    if not names:
        return
    if args["runner"] == "local":
        return run_local(spec, names, args)
    with ThreadPoolExecutor(max_workers=max(1, int(args["jobs"]))) as pool:
        list(pool.map(lambda name: _run_one(spec, name, args), names))


def draw_figures(spec: Mapping, args: Mapping) -> tuple[list[str], list[str]]:
    """The claims file's figures through ``python -m optbench.plot`` into reports/figures/<spec name>: (the PNG
    files written, why each figure that failed was not drawn)."""
    written, failed = [], []
    plots_dir = Path(args["reports_dir"]) / "figures"  # the plotter adds the spec's name: figures/<spec>/<name>
    for plot_args in spec.get("figures") or []:
        command = [sys.executable, "-m", "optbench.plot", *plot_args, f"results_dir={args['results_dir']}",
                   f"plots_dir={plots_dir}"]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        paths = [line[len("wrote "):] for line in done.stdout.splitlines() if line.startswith("wrote ")]
        written += [p for p in paths if p.endswith(".png")]
        if done.returncode or not paths:
            failed.append(f"{' '.join(plot_args)}: {(done.stderr.strip().splitlines() or ['no figure written'])[-1]}")
    return written, failed


def parse(argv: Sequence[str]) -> dict:
    """key=value arguments over ARGS' defaults; an unknown key or a missing paper is an error, not ignored."""
    args = dict(ARGS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ARGS:
            raise SystemExit(f"optbench.reproduce: unknown argument {arg!r} (keys: {', '.join(ARGS)})")
        args[key] = value
    if not args["paper"]:
        papers = ", ".join(sorted(p.stem for p in c.claims_path("x").parent.glob("*.yaml")))
        raise SystemExit(f"optbench.reproduce: paper=NAME is required (papers: {papers})")
    if args["where"] not in ("cpu", "gpu") or args["budget"] not in c.BUDGETS:
        raise SystemExit("optbench.reproduce: where is cpu|gpu and budget is quick|full")
    if not args["jobs"].isdigit() or args["figures"] not in ("true", "false") or args["runner"] not in RUNNERS:
        raise SystemExit("optbench.reproduce: jobs is a whole number, figures is true|false, runner is local|hydra")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if args["data_dir"]:
        os.environ["OPTBENCH_DATA_DIR"] = str(Path(args["data_dir"]).resolve())  # the runs' data_dir default
    spec = c.load_claims(args["paper"])
    start = time.perf_counter()
    run_all(spec, args)
    verdicts = c.evaluate_all(spec, args["results_dir"], args["where"], args["budget"])
    figures, failed = draw_figures(spec, args) if args["figures"] == "true" else ([], [])
    report = reports.record(spec, verdicts, {"where": args["where"], "budget": args["budget"],
                                             "results_dir": args["results_dir"], "figures": figures,
                                             "figures_failed": failed, "elapsed_s": time.perf_counter() - start})
    for v in verdicts:
        print(f"{v.claim['id']}: {v.verdict} {v.ours} {v.why}".rstrip())
    for path in reports.write(report, args["reports_dir"]):
        print(f"optbench.reproduce: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
