"""optbench's plotter: run directories -> figures and tables.

  python -m optbench.plot figure=NAME [results_dir=DIR] [plots_dir=plots] [only=[a,b]]
      a paper's figures: configs/figure/NAME.yaml -> plots/NAME/*.{{png,pdf}}   (figures: {figures});
      only: just those figures of the file (e.g. figure=adamp only=toy)
  python -m optbench.plot table=NAME [results_dir=DIR] [plots_dir=plots]
      a paper's tables: configs/table/NAME.yaml -> plots/tables/NAME.{{md,tex}}  (tables: {tables})
  python -m optbench.plot table=tuned [results_dir=DIR] [task=NAME] [metric=loss] [select=best|final]
      each optimizer at its tuned setting (optbench.selection) -> plots/tables/tuned.{{md,tex}}
  python -m optbench.plot figure=sensitivity [results_dir=DIR] [task=NAME] [metric=loss] [select=best|final]
      validation score against learning rate per optimizer (DeepOBS) -> plots/sensitivity.{{png,pdf}}
  python -m optbench.plot figure=aggmo_rates
      AggMo's convergence rates on a quadratic, computed (no runs) -> plots/aggmo/rates.{{png,pdf}}
  python -m optbench.plot ranking=true task=NAME [results_dir=results] [out=plots/NAME]
      every optimizer on one task ranked by final validation loss, with curves by family (the quickstart's)
  python -m optbench.plot [task=NAME] [metrics=[train_loss,val_acc]] [optims=[a,b]] [out=plots/NAME]
      metric-vs-epoch curves, one figure per task found (tasks: {tasks})

NAME may be a list (figure=[a,b]) or a path to a spec file. A one-line table of any runs:
python -m optbench.summary results_dir=DIR."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from optbench.plot.curves import compare_figure
from optbench.plot.runs import group_runs, load_runs
from optbench.plot.specs import SpecError, load_figure_spec, load_table_spec

DEFAULTS = {"figure": None, "table": None, "ranking": False, "results_dir": None, "task": None, "optims": None,
            "metrics": ["train_loss", "val_loss", "val_acc"], "out": None, "plots_dir": "plots", "metric": "loss",
            "select": "best", "only": None}
BUILT_IN = {"figure": ["sensitivity", "aggmo_rates"], "table": ["tuned"]}  # no spec file: from any results


def help_text() -> str:
    from optbench.run_config import config_choices

    names = {group: ", ".join(config_choices(group) + BUILT_IN.get(group, []))
             for group in ("figure", "table", "task")}
    return (__doc__ or "").format(figures=names["figure"], tables=names["table"], tasks=names["task"])


def _ranking(args) -> int:
    from optbench import results
    from optbench.plot.ranking import ranking_figure

    if not args.task:
        print("ranking=true needs task=NAME", file=sys.stderr)
        return 2
    metrics = results.load(args.results_dir or "results", task=args.task, optim=args.optims)
    if metrics.empty:
        print(f"no runs of task {args.task} under {args.results_dir or 'results'}", file=sys.stderr)
        return 1
    for path in ranking_figure(metrics, args.task, Path(args.out or Path(args.plots_dir) / args.task)):
        print(f"wrote {path}")
    return 0


def _tuned_rows(args):
    from optbench import results

    metrics = results.load(args.results_dir or "results", task=args.task, optim=args.optims)
    if metrics.empty:
        raise SpecError(f"no runs under {args.results_dir or 'results'}" + (f" for task {args.task}" if args.task
                                                                              else ""))
    return metrics


def _sensitivity(args) -> None:
    from optbench.plot.sensitivity import sensitivity_figure

    try:
        paths = sensitivity_figure(_tuned_rows(args), Path(args.out or Path(args.plots_dir) / "sensitivity"),
                                   str(args.metric), str(args.select))
    except ValueError as err:
        raise SpecError(str(err)) from None
    for path in paths:
        print(f"wrote {path}")


def _tuned_table(args) -> None:
    from optbench.selection import select_tuned, tuned_latex, tuned_markdown

    try:
        chosen = select_tuned(_tuned_rows(args), str(args.metric), str(args.select))
    except ValueError as err:
        raise SpecError(str(err)) from None
    text = tuned_markdown(chosen, str(args.metric), str(args.select))
    print(text)
    out = Path(args.plots_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuned.md").write_text(text + "\n")
    (out / "tuned.tex").write_text(tuned_latex(chosen, str(args.metric), str(args.select)))
    for path in (out / "tuned.md", out / "tuned.tex"):
        print(f"wrote {path}")


def _figure(name: str, args) -> None:
    from optbench.plot.figures import draw_all

    if name == "sensitivity":
        return _sensitivity(args)
    if name == "aggmo_rates":  # computed, no runs needed
        from optbench.plot.rates import rates_figure

        for path in rates_figure(Path(args.out or Path(args.plots_dir) / "aggmo" / "rates")):
            print(f"wrote {path}")
        return None
    spec = load_figure_spec(name)
    results = args.results_dir or spec.results_dir
    runs = load_runs(results)
    if not runs:
        print(f"figure={name}: no run directories under {results}; drawing empty panels", file=sys.stderr)
    only = [args.only] if isinstance(args.only, str) else list(args.only or [])
    try:
        paths = draw_all(spec, runs, Path(args.plots_dir), only)
    except ValueError as err:
        raise SpecError(str(err)) from None
    for path in paths:
        print(f"wrote {path}")


def _table(name: str, args) -> None:
    from optbench.plot.tables import build_tables, to_markdown, write_tables

    if name == "tuned":
        return _tuned_table(args)
    spec = load_table_spec(name)
    results = args.results_dir or spec.results_dir
    tables = build_tables(spec, load_runs(results))
    print(to_markdown(tables))
    for path in write_tables(tables, Path(args.plots_dir)):
        print(f"wrote {path}")


def _curves(args) -> int:
    results = args.results_dir or "results"
    runs = load_runs(results, args.task, args.optims)
    if not runs:
        print(f"no run directories under {results}" + (f" for task {args.task}" if args.task else ""),
              file=sys.stderr)
        return 1
    for task in sorted({r.task for r in runs}):
        groups = group_runs(r for r in runs if r.task == task)
        metrics = [m for m in args.metrics if any(m in run.metrics for g in groups for run in g.runs)]
        out = Path(args.out) if args.out and len({r.task for r in runs}) == 1 else Path(args.plots_dir) / task
        for path in compare_figure(groups, metrics, task, out):
            print(f"wrote {path}")
    return 0


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text())
        return 0
    unknown = [a.split("=")[0] for a in argv if a.split("=")[0] not in DEFAULTS]
    if unknown:
        print(f"unknown argument {unknown[0]!r}; valid: {', '.join(DEFAULTS)} (--help for more)", file=sys.stderr)
        return 2
    args = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))
    figures, tables = _names(args.figure), _names(args.table)
    if args.ranking:
        return _ranking(args)
    if not figures and not tables:
        return _curves(args)
    try:
        for name in figures:
            _figure(name, args)
        for name in tables:
            _table(name, args)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _names(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if OmegaConf.is_list(value) or isinstance(value, list) else [str(value)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
