"""Result tables: every number equals the one computed directly from the CSVs the tests wrote; a diverged and
a still-running run are counted, not averaged in; the performance profile and the speedup by hand."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, markdown_rows
from optbench.plot.measures import Speedup, performance_profile, speedup
from optbench.plot.runs import group_runs, load_runs
from optbench.plot.specs import SpecError, load_table_spec
from optbench.plot.tables import build_tables, fmt_stat, latex_escape, to_latex, to_markdown
from test_plot_rundirs import classification_rows, step_rows, write_run


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for seed in range(3):
        write_run(root, "t1", "sgd", seed, classification_rows(seed, speed=1.0))
        write_run(root, "t1", "adam", seed, classification_rows(seed, speed=2.0))
        write_run(root, "t2", "sgd", seed, classification_rows(seed, speed=0.5))
        write_run(root, "t2", "adam", seed, classification_rows(seed, speed=1.5))
    # adam on t1: seed 3 diverged in epoch 2, seed 4 is still running
    write_run(root, "t1", "adam", 3, classification_rows(3, speed=2.0)[:2]
              + [{"epoch": 2, "step": 20, "time_s": 1.0, "lr": 1e-3, "train_loss": float("nan")}], status="diverged")
    write_run(root, "t1", "adam", 4, classification_rows(4, speed=2.0)[:3], status="running")
    return root


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "table.yaml"
    path.write_text(textwrap.dedent("""
        results_dir: results/none
        labels: {sgd: SGD, adam: Adam}
        optims: [sgd, adam]
        tasks:
          t1: {metric: acc, target: 0.7}
          t2: {metric: loss, target: 1.0}
          absent: {metric: acc, target: 0.5}
        profile: {time: steps, taus: [1, 2, 4]}
        """))
    return load_table_spec(str(path))


def _csv_column(seed, speed, column):
    return np.array([row[column] for row in classification_rows(seed, speed=speed)])


def test_numbers_equal_those_computed_from_the_csvs(results, spec):
    tables = build_tables(spec, load_runs(results))
    assert [t.task for t in tables.tasks] == ["t1", "t2"]
    t1 = tables.tasks[0]
    assert [r.label for r in t1.rows] == ["SGD", "Adam"]
    adam = t1.rows[1]
    assert adam.runs_note == "1 diverged, 3 finished, 1 running"
    # only the 3 finished seeds enter final/best
    finals = [_csv_column(s, 2.0, "test_acc")[-1] for s in range(3)]
    assert adam.cells["final"].mean == pytest.approx(np.mean(finals))
    assert adam.cells["final"].std == pytest.approx(np.std(finals, ddof=1))
    assert adam.cells["final"].n == 3
    bests = [_csv_column(s, 2.0, "test_acc").max() for s in range(3)]
    assert adam.cells["best"].mean == pytest.approx(np.mean(bests))
    best_epochs = [int(np.argmax(_csv_column(s, 2.0, "val_acc"))) for s in range(3)]
    assert best_epochs == [3, 3, 3]  # val_acc dips in the last epoch: best.pth is not the last epoch
    assert adam.cells["best_val_epoch"].mean == 3
    at_best = [_csv_column(s, 2.0, "test_acc")[3] for s in range(3)]
    assert adam.cells["at_best_val"].mean == pytest.approx(np.mean(at_best))
    # time to val_acc >= 0.7: first epoch row reaching it, its step and time_s; the diverged seed never does
    steps, seconds = [], []
    for s in range(3):
        val = _csv_column(s, 2.0, "val_acc")
        first = int(np.flatnonzero(val >= 0.7)[0])
        steps.append(_csv_column(s, 2.0, "step")[first])
        seconds.append(_csv_column(s, 2.0, "time_s")[first])
    assert (adam.cells["target_steps"].mean, adam.cells["target_steps"].n, adam.cells["target_steps"].total) == (
        pytest.approx(np.mean(steps)), 3, 4)
    assert adam.cells["target_seconds"].mean == pytest.approx(np.mean(seconds))
    # loss on t2: lower is better
    t2_sgd = tables.tasks[1].rows[0]
    assert t2_sgd.cells["best"].mean == pytest.approx(np.mean([_csv_column(s, 0.5, "test_loss").min()
                                                               for s in range(3)]))

    markdown = to_markdown(tables)
    cells = next(row for row in markdown_rows(markdown) if row[0] == "Adam" and row[1].startswith("1 diverged"))
    assert cells[2] == f"{np.mean(finals):.4g} ± {np.std(finals, ddof=1):.4g}"
    assert cells[6] == f"{np.mean(steps):.4g} ± {np.std(steps, ddof=1):.4g} (3/4)"
    assert "iterations to val_acc ≥ 0.7" in markdown and "iterations to val_loss ≤ 1" in markdown
    assert "absent" not in markdown


def test_performance_profile_over_tasks(results, spec):
    profile = build_tables(spec, load_runs(results)).profile
    assert profile.tasks == ["t1", "t2"] and profile.taus == [1, 2, 4]
    # Adam on t1 has a diverged seed that never reached the target: not solved there
    times = {}
    for task, speeds in (("t1", {"SGD": 1.0}), ("t2", {"SGD": 0.5, "Adam": 1.5})):
        times[task] = {}
        for label, speed in speeds.items():
            target, higher = (0.7, True) if task == "t1" else (1.0, False)
            column = "val_acc" if task == "t1" else "val_loss"
            steps = []
            for s in range(3):
                values = _csv_column(s, speed, column)
                first = np.flatnonzero(values >= target if higher else values <= target)[0]
                steps.append(_csv_column(s, speed, "step")[first])
            times[task][label] = np.mean(steps)
    assert times["t2"]["SGD"] / times["t2"]["Adam"] == 2  # so SGD solves t2 from tau = 2 on
    assert profile.fractions == {"SGD": [0.5, 1.0, 1.0], "Adam": [0.5, 0.5, 0.5]}


def test_performance_profile_by_hand():
    times = {"a": {"x": 10.0, "y": 20.0}, "b": {"x": 30.0, "y": 15.0}, "c": {"x": math.inf, "y": math.inf},
             "d": {"y": 8.0}}
    assert performance_profile(times, ["x", "y"], [1, 2, 3]) == {"x": [0.25, 0.5, 0.5], "y": [0.5, 0.75, 0.75]}


def test_speedup_is_iterations_to_the_baselines_lowest_loss():
    steps = np.arange(1, 11) * 10.0
    adam = np.array([5, 4, 3, 2.5, 2.2, 2.0, 2.1, 2.05, 2.0, 2.0])
    fast = np.array([4, 2.5, 1.9, 1.5, 1, 1, 1, 1, 1, 1])
    result = speedup((steps, adam), (steps, fast))
    assert result == Speedup(2.0, 60.0, 30.0) and result.ratio == 2.0
    assert math.isnan(speedup((steps, adam), (steps, adam + 1)).ratio)


def test_speedup_table_from_smoothed_steps(tmp_path):
    for seed in range(2):
        for staleness, slow in ((0, 1.0), (15, 1.0)):
            variant = "default" if staleness == 0 else "trainer.staleness=15"
            config = {"trainer.staleness": staleness}
            write_run(tmp_path / "r", "t", "adam", seed, classification_rows(seed), step_rows(seed, speed=slow),
                      variant=variant, config=config)
            write_run(tmp_path / "r", "t", "yellowfin", seed, classification_rows(seed),
                      step_rows(seed, speed=2 * slow), variant=variant, config=config)
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent("""
        speedup:
          baseline: adam
          optims: [yellowfin]
          smooth: 3
          settings: {sync: {trainer.staleness: 0}, async: {trainer.staleness: 15}}
        """))
    tables = build_tables(load_table_spec(str(path)), load_runs(tmp_path / "r"))
    assert [(r.task, r.setting) for r in tables.speedups] == [("t", "sync"), ("t", "async")]

    def smoothed_mean(speed):
        rows = [[r["loss"] for r in step_rows(s, speed=speed)] for s in range(2)]
        smooth = [[np.mean(row[max(0, i - 2): i + 1]) for i in range(len(row))] for row in rows]
        return np.mean(smooth, 0)

    base, fast = smoothed_mean(1.0), smoothed_mean(2.0)
    x = np.array([r["step"] for r in step_rows(0)])
    base_steps = x[np.argmin(base)]
    fast_steps = x[np.flatnonzero(fast <= base.min())[0]]
    got = tables.speedups[0].speedups["yellowfin"]
    assert (got.loss, got.baseline_steps, got.steps) == (pytest.approx(base.min()), base_steps, fast_steps)
    assert f"{base_steps / fast_steps:.2f}x ({fast_steps:.0f} it)" in to_markdown(tables)


def test_latex_is_escaped_and_balanced(results, spec):
    latex = to_latex(build_tables(spec, load_runs(results)))
    assert latex.count(r"\begin{tabular}") == latex.count(r"\end{tabular}") == 3
    assert r"val\_acc $\geq$ 0.7" in latex and "±" not in latex and r"$\pm$" in latex
    assert latex_escape("a_b & 50%") == r"a\_b \& 50\%"


def test_empty_and_partial_stats_are_marked():
    from optbench.plot.measures import Stat

    assert fmt_stat(Stat.of([])) == "—"
    assert fmt_stat(Stat.of([math.nan, math.nan])) == "— (0/2)"
    assert fmt_stat(Stat.of([1.0])) == "1"


def test_table_spec_mistakes_and_command_line(results, spec, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: {t1: {metric: acc, goal: 0.5}}")
    with pytest.raises(SpecError, match="tasks.t1: unknown key 'goal'"):
        load_table_spec(str(bad))
    proc = subprocess.run([sys.executable, "-m", "optbench.plot", f"table={spec_path(tmp_path, spec)}",
                           f"results_dir={results}", f"plots_dir={tmp_path / 'plots'}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "plots" / "tables"
    assert (out / "table.md").read_text() == proc.stdout.split("\nwrote ")[0].rstrip("\n") + "\n"
    assert (out / "table.tex").exists() and (out / "table_profile.png").stat().st_size > 1000


def spec_path(tmp_path, spec):
    return tmp_path / "table.yaml"


def test_profile_colours_are_the_figures_colours(results, tmp_path, monkeypatch):
    """A table whose labels come from a figure spec draws its profile in that figure's colours and styles,
    with the legend beside the axes."""
    import matplotlib.pyplot as plt

    import optbench.plot.figures as figures_module
    from optbench.plot.style import Style
    from optbench.plot.tables import draw_profile

    figure = tmp_path / "fig.yaml"
    figure.write_text(textwrap.dedent("""
        style:
          families: {Momentum: [sgd], Adaptive: [adam]}
          labels: {sgd: SGD, adam: Adam}
          linestyles: {adam: "--"}
        figures:
          f: {task: t1, y: val_loss}
        """))
    table = tmp_path / "table.yaml"
    table.write_text(textwrap.dedent(f"""
        labels_from: {figure}
        optims: [sgd, adam]
        tasks:
          t1: {{metric: acc, target: 0.7}}
          t2: {{metric: loss, target: 1.0}}
        profile: {{time: steps, taus: [1, 2, 4]}}
        """))
    built = build_tables(load_table_spec(str(table)), load_runs(results))
    drawn = []
    monkeypatch.setattr(figures_module, "save_figure", lambda fig, out: drawn.append(fig) or [])
    draw_profile(built.profile, tmp_path / "profile")
    (fig,) = drawn
    style = Style({"families": {"Momentum": ["sgd"], "Adaptive": ["adam"]}, "linestyles": {"adam": "--"}})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["SGD"].get_color() == style.color("sgd") and lines["Adam"].get_color() == style.color("adam")
    assert lines["Adam"].get_linestyle() == "--"
    assert fig.axes[0].get_legend() is None and fig.legends  # the legend is the figure's, beside the axes
    plt.close(fig)


def test_a_run_that_reached_its_target_counts_as_finished(tmp_path):
    from optbench.plot.measures import counted, final_value
    from test_plot_rundirs import classification_rows, write_run

    write_run(tmp_path, "t", "sgd", 0, classification_rows(0), status="reached")
    [group] = group_runs(load_runs(tmp_path))
    assert final_value(group.runs[0], "test_acc") == classification_rows(0)[-1]["test_acc"]
    assert counted(group) == group.runs
