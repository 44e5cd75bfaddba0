"""One table for any set of runs: ``python -m optbench.summary results_dir=DIR [task=NAME] [optim=NAME]``.

One row per (task, optim, variant): how many seeds, their statuses, the final and the best validation metric
(mean ± std over finished seeds, and those that reached their stop_at target), the test metric at the best
validation loss (the epoch best.pth keeps), and the training time. A sweep prints it when it ends
(optbench.callbacks.SweepSummary, configs/config.yaml). The metric is the task's own (accuracy, perplexity,
reconstruction error), else the loss.
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd

from optbench import results, rundir
from optbench.results import higher_is_better

GROUP = ["task", "optim", "variant"]


def main_metric(columns: Any) -> str:
    """The task's validation metric: its first one besides the loss (val_acc, val_ppl, val_sse), else val_loss."""
    named = [c[4:] for c in columns if str(c).startswith("val_") and c != "val_loss"]
    return named[0] if named else "loss"


def per_run(metrics: pd.DataFrame) -> pd.DataFrame:
    """Final, best and test-at-best-validation values of every run, from its metrics rows."""
    metric = main_metric(metrics.columns)
    val, test = f"val_{metric}", f"test_{metric}"
    rows = []
    for _, run in metrics.sort_values("epoch").groupby("path", sort=True):  # a path is one run, whatever root
        key = run[["results_dir"] + GROUP + ["seed"]].iloc[0]
        values = run[val].dropna() if val in run else pd.Series(dtype=float)
        best = values.max() if higher_is_better(metric) else values.min()
        at_best = run.loc[run["val_loss"].idxmin()] if run["val_loss"].notna().any() else None
        rows.append({**key.to_dict(), "status": run["status"].iloc[0],
                     "final": values.iloc[-1] if len(values) else float("nan"), "best": best,
                     "test_at_best": at_best[test] if at_best is not None and test in run else float("nan"),
                     "train_s": run["time_s"].max() if "time_s" in run else float("nan")})
    return pd.DataFrame(rows)


def _spread(values: pd.Series) -> str:
    values = values.dropna()
    if not len(values):
        return "—"
    return f"{values.mean():.4g} ± {values.std(ddof=1):.2g}" if len(values) > 1 else f"{values.iloc[0]:.4g}"


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """The summary table of ``results.load(...)``'s rows."""
    if metrics.empty:
        return pd.DataFrame(columns=GROUP)
    metric = main_metric(metrics.columns)
    runs = per_run(metrics)
    by = GROUP if runs["results_dir"].nunique() == 1 else ["results_dir"] + GROUP  # runs of several sweeps
    rows = []
    for key, group in runs.groupby(by, sort=True):
        done = group[group["status"].isin(rundir.FINAL)]
        counts = group["status"].value_counts()
        rows.append({**dict(zip(by, key)), "seeds": len(group),
                     "status": ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                     f"final val_{metric}": _spread(done["final"]), f"best val_{metric}": _spread(done["best"]),
                     f"test_{metric} at best val": _spread(done["test_at_best"]),
                     "train s": _spread(done["train_s"])})
    return pd.DataFrame(rows)


def table(results_dir: str, task: str | None = None, optim: str | None = None) -> str:
    """The summary as Markdown, one table per task (each task has its own metric)."""
    metrics = results.load(results_dir, task=task, optim=optim)
    if metrics.empty:
        return f"no runs under {results_dir}" + (f" for task {task}" if task else "")
    return "\n\n".join(f"### {name}\n\n" + summarize(rows.dropna(axis=1, how="all")).drop(columns="task")
                       .to_markdown(index=False) for name, rows in metrics.groupby("task", sort=True))


HELP = __doc__


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help", "help") for a in argv):
        print(HELP)
        return 0
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = sorted(set(args) - {"results_dir", "task", "optim"}) + [a for a in argv if "=" not in a]
    if unknown:
        print(f"unknown argument {unknown[0]!r}; usage: python -m optbench.summary results_dir=DIR [task=NAME] "
              "[optim=NAME]", file=sys.stderr)
        return 2
    print(table(args.get("results_dir", "results"), args.get("task"), args.get("optim")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
