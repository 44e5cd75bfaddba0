"""python -m optbench.reproduce paper=NAME [where=cpu|gpu] [budget=quick|full] [results_dir=results/reproduce]
[reports_dir=reports] [data_dir=PATH] [jobs=N] [figures=true|false]: run the runs a paper's claims need,
evaluate every claim, draw the paper's figures, write reports/<paper>.{md,html,json}.

Runs go through the ordinary trainer as Hydra multiruns (``python -m optbench.cli -m ...``), ``jobs`` run sets
at a time, so a second call resumes or skips what is done. Only claims that can run here are run: a ``where: gpu``
claim on a CPU, a claim of the other budget, and a claim whose dataset is not on disk are reported ``not run``
with why, and their runs are not started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

from optbench import claims as c
from optbench import reports

ARGS = {"paper": None, "where": "cpu", "budget": "quick", "results_dir": "results/reproduce", "reports_dir": "reports",
        "data_dir": None, "jobs": str(os.cpu_count() or 1), "figures": "true"}


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
    start = time.perf_counter()
    done = subprocess.run(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    took = time.perf_counter() - start
    if done.returncode:
        print(f"optbench.reproduce: run set {name} failed after {took:.0f} s:\n{done.stderr[-2000:]}",
              file=sys.stderr, flush=True)
    else:
        print(f"optbench.reproduce: {name} ({' '.join(command[4:-3])}) done in {took:.0f} s", flush=True)


def run_all(spec: Mapping, args: Mapping) -> None:
    """Each needed run set, ``jobs`` at a time (every run set its own directories; runs lock them anyway)."""
    names = needed_run_sets(spec, args["where"], args["budget"])
    with ThreadPoolExecutor(max_workers=max(1, int(args["jobs"]))) as pool:
        list(pool.map(lambda name: _run_one(spec, name, args), names))


def draw_figures(spec: Mapping, args: Mapping) -> tuple[list[str], list[str]]:
    """The claims file's figures through ``python -m optbench.plot`` into reports/figures/<paper>: (the PNG and
    PDF files written, why each figure that failed was not drawn)."""
    written, failed = [], []
    plots_dir = Path(args["reports_dir"]) / "figures" / spec["paper"]
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
    if not args["jobs"].isdigit() or args["figures"] not in ("true", "false"):
        raise SystemExit("optbench.reproduce: jobs is a whole number and figures is true|false")
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
