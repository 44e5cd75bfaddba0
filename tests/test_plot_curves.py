"""The basic plotter: reads run directories the trainer wrote, aggregates seeds, draws the files."""

from __future__ import annotations

import csv
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

from conftest import REPO, compose
from optbench.plot import group_runs, load_runs
from optbench.plot.curves import plot_metric
from optbench.train import run


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for optim in ("sgd", "adam"):
        for seed in (0, 1):
            run(compose("task=digits_logreg", f"optim={optim}", f"seed={seed}", "task.epochs=2",
                        f"results_dir={root}", "device=cpu"))
    return root


def test_groups_aggregate_seeds_exactly(results):
    groups = group_runs(load_runs(results))
    assert [(g.optim, len(g.runs)) for g in groups] == [("adam", 2), ("sgd", 2)]
    x, mean, low, high = groups[0].curve("val_loss")
    columns = []
    for seed in (0, 1):
        with open(groups[0].runs[seed].path / "metrics.csv") as f:
            columns.append([float(r["val_loss"]) for r in csv.DictReader(f)])
    assert list(x) == [0, 1, 2]
    np.testing.assert_allclose(mean, np.mean(columns, 0))
    np.testing.assert_allclose(low, np.min(columns, 0))
    np.testing.assert_allclose(high, np.max(columns, 0))


def test_curves_of_different_length_use_the_seeds_that_reached_each_epoch(results, tmp_path):
    import shutil

    shutil.copytree(results, tmp_path / "r")
    short = tmp_path / "r" / "digits_logreg" / "sgd" / "task.epochs=2" / "seed1" / "metrics.csv"
    lines = short.read_text().splitlines()
    short.write_text("\n".join(lines[:2]) + "\n")  # seed 1 stopped after epoch 0 (e.g. still running)
    group = [g for g in group_runs(load_runs(tmp_path / "r")) if g.optim == "sgd"][0]
    x, mean, low, high = group.curve("val_loss")
    assert list(x) == [0, 1, 2]
    assert low[2] == high[2] == mean[2]


def test_plot_metric_draws_one_line_per_group(results):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_metric(ax, group_runs(load_runs(results)), "train_loss")
    assert [line.get_label() for line in ax.get_lines()] == [
        "adam (task.epochs=2) (2 seeds)", "sgd (task.epochs=2) (2 seeds)"]
    assert ax.get_yscale() == "log" and len(ax.collections) == 2  # min-max bands
    plt.close(fig)


def test_command_line_writes_png_and_pdf(results, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "optbench.plot", f"results_dir={results}",
                           f"out={tmp_path / 'fig'}"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fig.png").stat().st_size > 1000 and (tmp_path / "fig.pdf").exists()
    bad = subprocess.run([sys.executable, "-m", "optbench.plot", "colour=red"], capture_output=True, text=True,
                         cwd=REPO)
    assert bad.returncode == 2 and "unknown argument 'colour'" in bad.stderr
