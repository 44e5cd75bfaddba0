"""python -m optbench.reproduce paper=NAME [where=cpu] [budget=quick|full] [results_dir=results/reproduce]
[reports_dir=reports]: run the runs a paper's claims need, evaluate every claim, write reports/<paper>.md.

Runs go through the ordinary trainer as a Hydra multirun (``python -m optbench.cli -m ...``), so a second call
resumes or skips what is done. Only claims that can run here are run (a ``where: gpu`` claim on a CPU is
reported ``not run``). The report is Markdown only; an HTML page with figures is not written yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from optbench import claims as c

ARGS = {"paper": None, "where": "cpu", "budget": "quick", "results_dir": "results/reproduce", "reports_dir": "reports"}


def needed_run_sets(spec: Mapping, where: str) -> list[str]:
    """The run sets of the claims that can run here, in file order, each once."""
    names: list[str] = []
    for claim in spec["claims"]:
        if claim["where"] == "cpu" or where == "gpu":
            names += [n for n in claim["runs"] if n not in names]
    return names


def run_command(spec: Mapping, name: str, results_dir: str, budget: str) -> list[str]:
    """One multirun over a run set's seeds, with the budget's overrides (the trainer skips finished runs)."""
    seeds = ",".join(str(s) for s in spec["runs"][name]["seeds"])
    return [sys.executable, "-m", "optbench.cli", "-m", *c.run_overrides(spec, name, budget), f"seed={seeds}",
            f"results_dir={results_dir}", "trainer.progress=false"]


def run_all(spec: Mapping, args: Mapping) -> None:
    """Run each needed run set; a failed run set is reported by its claims' verdicts (not run), not raised."""
    for name in needed_run_sets(spec, args["where"]):
        command = run_command(spec, name, args["results_dir"], args["budget"])
        print("optbench.reproduce:", " ".join(command[1:]), flush=True)
        done = subprocess.run(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        if done.returncode:
            print(f"optbench.reproduce: run set {name} failed:\n{done.stderr[-2000:]}", file=sys.stderr)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report(spec: Mapping, verdicts: Sequence[c.Verdict], args: Mapping) -> str:
    """The Markdown report: one row per claim, then each claim's statement, source and substitute."""
    lines = [f"# Reproduction report: {spec.get('title') or spec['paper']}", "",
             f"Computed by `python -m optbench.reproduce paper={spec['paper']} where={args['where']} "
             f"budget={args['budget']}` from the runs under `{args['results_dir']}`; verdicts are computed from "
             "the runs' metrics.csv, never written by hand. Numbers: mean ± std over seeds (n seeds).", "",
             "| claim | paper | optbench | verdict | runs |", "|---|---|---|---|---|"]
    for v in verdicts:
        verdict = v.verdict + (f" ({v.why})" if v.why else "")
        runs = "<br>".join(f"`{p}`" for p in v.paths)
        lines.append(f"| {_cell(v.claim['id'])} | {_cell(c.paper_number(v.claim))} | {_cell(v.ours or '—')} | "
                     f"{_cell(verdict)} | {runs} |")
    lines += ["", "## Claims", ""]
    for v in verdicts:
        claim = v.claim
        lines.append(f"- **{claim['id']}** ({claim['source']}; {claim['kind']} of `{claim['metric']}`"
                     f"{', epoch ' + str(claim['epoch']) if claim.get('epoch') is not None else ''}, "
                     f"where {claim['where']}): {claim['statement']}"
                     + (f" Substitute: {claim['substitute']}." if claim.get("substitute") else ""))
    return "\n".join(lines) + "\n"


def parse(argv: Sequence[str]) -> dict:
    """key=value arguments over ARGS' defaults; an unknown key or a missing paper is an error, not ignored."""
    args = dict(ARGS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ARGS:
            raise SystemExit(f"optbench.reproduce: unknown argument {arg!r} (keys: {', '.join(ARGS)})")
        args[key] = value
    if not args["paper"]:
        raise SystemExit("optbench.reproduce: paper=NAME is required")
    if args["where"] not in ("cpu", "gpu") or args["budget"] not in ("quick", "full"):
        raise SystemExit("optbench.reproduce: where is cpu|gpu and budget is quick|full")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    spec = c.load_claims(args["paper"])
    run_all(spec, args)
    verdicts = c.evaluate_all(spec, args["results_dir"], args["where"], args["budget"])
    out = Path(args["reports_dir"]) / f"{args['paper']}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(spec, verdicts, args))
    for v in verdicts:
        print(f"{v.claim['id']}: {v.verdict} {v.ours} {v.why}".rstrip())
    print(f"optbench.reproduce: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
