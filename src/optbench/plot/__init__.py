"""Run directories -> paper-style figures and tables. Reads only what the trainer wrote (CSV, JSON, YAML);
never imports the trainer."""

from optbench.plot.runs import Run, RunGroup, group_runs, load_runs

__all__ = ["Run", "RunGroup", "group_runs", "load_runs"]
