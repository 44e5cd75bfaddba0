"""The reproduction budget: wall time of ``python -m optbench.reproduce`` per paper from an empty results
directory (every run trained), against the issue's budget for all five papers together (quick < 5 min, full
< 30 min on 2 cores). Not a ratio benchmark: the baseline is the budget itself.

  python benchmarks/reproduce_budget.py [--budget quick full] [--papers adamp aggmo ...] [--jobs 2]

Each paper runs in a fresh temporary results directory, so nothing is reused; the claims' verdicts are printed
with the times, because a fast report whose claims did not run would prove nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

PAPERS = ["adamp", "aggmo", "expectigrad", "hypergrad", "yellowfin"]
LIMITS_S = {"quick": 5 * 60, "full": 30 * 60}


def time_paper(paper: str, budget: str, jobs: int, root: Path) -> dict:
    """One paper's report from nothing: seconds, and how many claims came out reproduced / not / not run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "optbench.reproduce", f"paper={paper}", f"budget={budget}",
                    f"results_dir={root / 'results'}", f"reports_dir={root / 'reports'}", f"jobs={jobs}"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    verdicts = pd.Series([c["verdict"] for c in json.loads((root / "reports" / f"{paper}.json").read_text())["claims"]])
    counts = verdicts.value_counts()
    return {"budget": budget, "paper": paper, "seconds": round(seconds, 1),
            **{v: int(counts.get(v, 0)) for v in ("reproduced", "not reproduced", "not run")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", nargs="+", default=["quick"], choices=list(LIMITS_S))
    parser.add_argument("--papers", nargs="+", default=PAPERS)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    rows = []
    for budget in args.budget:
        for paper in args.papers:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(time_paper(paper, budget, args.jobs, Path(tmp)))
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    for budget, group in table.groupby("budget"):
        total = group["seconds"].sum()
        print(f"{budget}: {total:.0f} s for {len(group)} papers (budget {LIMITS_S[budget]} s: "
              f"{'within' if total < LIMITS_S[budget] else 'OVER'}, {total / LIMITS_S[budget]:.2f} of it)")


if __name__ == "__main__":
    main()
