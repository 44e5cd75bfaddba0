"""`python -m optbench.plot [results_dir=results] [task=NAME] [metrics=[train_loss,val_acc]] [optims=[a,b]]
[out=plots/NAME]`: draw metric-vs-epoch curves (mean and min-max band over seeds) for every task found."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from optbench.plot.curves import compare_figure
from optbench.plot.runs import group_runs, load_runs

DEFAULTS = {"results_dir": "results", "task": None, "optims": None, "metrics": ["train_loss", "val_loss", "val_acc"],
            "out": None, "plots_dir": "plots"}


def main(argv: list[str]) -> int:
    unknown = [a.split("=")[0] for a in argv if a.split("=")[0] not in DEFAULTS]
    if unknown:
        print(f"unknown argument {unknown[0]!r}; valid: {', '.join(DEFAULTS)}", file=sys.stderr)
        return 2
    args = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))
    runs = load_runs(args.results_dir, args.task, args.optims)
    if not runs:
        print(f"no run directories under {args.results_dir}" + (f" for task {args.task}" if args.task else ""),
              file=sys.stderr)
        return 1
    for task in sorted({r.task for r in runs}):
        groups = group_runs(r for r in runs if r.task == task)
        metrics = [m for m in args.metrics if any(m in run.metrics for g in groups for run in g.runs)]
        out = Path(args.out) if args.out and len({r.task for r in runs}) == 1 else Path(args.plots_dir) / task
        for path in compare_figure(groups, metrics, task, out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
