"""Paper figures from run directories the tests write: the right curves in the right axes, with the values
computed from the CSVs; runs that diverged or are still running do not break a figure."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from matplotlib.colors import to_hex

from conftest import REPO
from optbench.plot.figures import draw_figure
from optbench.plot.runs import load_runs
from optbench.plot.specs import CONFIGS, SpecError, load_figure_spec, load_table_spec
from test_plot_rundirs import classification_rows, step_rows, write_run


@pytest.fixture(scope="module")
def hypergrad_results(tmp_path_factory):
    """QUICK-style hypergrad results: SGD-HD (3 seeds, seed 2 diverged in epoch 2), SGDop-SGDNlop (seed 1 still
    running), an alpha_0 = 0.01 run that the main figures must leave out."""
    root = tmp_path_factory.mktemp("hypergrad")
    for seed in range(3):
        rows = classification_rows(seed)
        steps = step_rows(seed)
        status = "finished"
        if seed == 2:
            rows = rows[:2] + [{"epoch": 2, "step": 20, "time_s": 1.0, "lr": 5.0, "train_loss": float("inf")}]
            steps = steps[:10] + [{"step": 22, "epoch": 3, "loss": float("nan"), "lr": 5.0}]
            status = "diverged"
        write_run(root, "digits_logreg", "sgd_hd", seed, rows, steps, status)
    write_run(root, "digits_logreg", "sgd_hd", 0, classification_rows(0, speed=3), step_rows(0, speed=3),
              variant="lr=0.01", config={"optim.lr": 0.01})
    write_run(root, "digits_logreg", "sgdop_sgdnlop", 0, classification_rows(0, speed=2), step_rows(0, speed=2))
    write_run(root, "digits_logreg", "sgdop_sgdnlop", 1, classification_rows(1, speed=2)[:3], step_rows(1)[:8],
              status="running")
    write_run(root, "digits_mlp", "adam_hd", 0, classification_rows(0), step_rows(0))
    return root


def _grid(fig, rows, columns):
    return np.array(fig.axes[: rows * columns], dtype=object).reshape(rows, columns)


def _line(ax, label_start):
    return next(line for line in ax.get_lines() if str(line.get_label()).startswith(label_start))


def test_hypergrad_grid_puts_each_curve_in_its_axes(hypergrad_results):
    spec = load_figure_spec("hypergrad")
    grid_spec = next(f for f in spec.figures if f.name == "grid")
    fig = draw_figure(spec, grid_spec, load_runs(hypergrad_results))
    axes = _grid(fig, 3, 3)
    # the QUICK miniatures stand in for the paper's tasks, and the titles say so
    assert [ax.get_title() for ax in axes[0]] == ["Logistic regression [digits_logreg]",
                                                   "Multi-layer perceptron [digits_mlp]", "VGG-16 (CIFAR-10)"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["alpha (epoch mean)", "training loss", "validation loss"]
    assert [ax.get_yscale() for ax in axes[:, 0]] == ["linear", "log", "log"]

    # alpha per epoch: SGD-HD dashed (a baseline of the variants), mean over the seeds that reached each epoch;
    # the alpha_0 = 0.01 run is filtered out by the spec's where: {optim.lr: 1e-3}
    lr_line = _line(axes[0, 0], "SGD-HD")
    assert lr_line.get_label() == "SGD-HD [1 diverged]" and lr_line.get_linestyle() == "--"
    seeds = [classification_rows(s) for s in range(3)]
    expected = [np.mean([seeds[s][e]["lr"] for s in range(3)]) for e in range(2)]
    expected.append(np.mean([seeds[0][2]["lr"], seeds[1][2]["lr"], 5.0]))  # the diverged row logged lr 5
    expected += [np.mean([seeds[s][e]["lr"] for s in range(2)]) for e in (3, 4)]
    np.testing.assert_allclose(lr_line.get_ydata(), expected)
    variant = _line(axes[0, 0], "SGDop-SGDNlop")
    assert variant.get_linestyle() == "-" and variant.get_label() == "SGDop-SGDNlop [1 running]"
    assert to_hex(variant.get_color()) == to_hex(lr_line.get_color())  # one colour per family

    # training loss: the diverged seed's inf is dropped, and a cross marks its last finite point
    train = _line(axes[1, 0], "SGD-HD")
    np.testing.assert_allclose(train.get_ydata()[2], np.mean([seeds[0][2]["train_loss"], seeds[1][2]["train_loss"]]))
    crosses = [line for line in axes[1, 0].get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [1] and \
        crosses[0].get_ydata()[0] == pytest.approx(seeds[2][1]["train_loss"])

    # per-iteration alpha inset, log x
    (inset,) = axes[0, 0].child_axes
    assert inset.get_xscale() == "log"
    inset_line = next(line for line in inset.get_lines() if line.get_linestyle() == "--")
    np.testing.assert_allclose(inset_line.get_xdata()[:3], [2, 4, 6])
    assert "no runs for\ncifar10_vgg" in [t.get_text() for t in axes[0, 2].texts]
    assert [line.get_label() for line in axes[0, 1].get_lines()] == ["Adam-HD"]


def _tmp_spec(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return load_figure_spec(str(path))


def test_std_band_smoothing_and_explicit_curves(tmp_path):
    for seed in range(3):
        write_run(tmp_path / "r", "t", "momentum", seed, classification_rows(seed), step_rows(seed),
                  config={"optim.momentum": 0.9})
        write_run(tmp_path / "r", "t", "momentum", seed, classification_rows(seed, speed=0.5),
                  step_rows(seed, speed=0.5), variant="momentum=0.999", config={"optim.momentum": 0.999})
    spec = _tmp_spec(tmp_path, """
        style: {band: std, families: {CM: [momentum]}}
        figures:
          damping:
            task: t
            source: steps
            y: loss
            smooth: 3
            curves:
              - {optim: momentum, where: {optim.momentum: 0.9}, label: "CM 0.9"}
              - {optim: momentum, where: {optim.momentum: 0.999}, label: "CM 0.999", linestyle: ":"}
        """)
    ax = draw_figure(spec, spec.figures[0], load_runs(tmp_path / "r")).axes[0]
    fast, slow = ax.get_lines()
    assert (fast.get_label(), slow.get_label(), slow.get_linestyle()) == ("CM 0.9", "CM 0.999", ":")
    losses = np.array([[r["loss"] for r in step_rows(s, speed=0.5)] for s in range(3)])
    smoothed = np.array([[row[max(0, i - 2): i + 1].mean() for i in range(len(row))] for row in losses])
    np.testing.assert_allclose(slow.get_ydata(), smoothed.mean(0))
    band = ax.collections[1].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx((smoothed.mean(0) + smoothed.std(0)).max())
    assert band.min() == pytest.approx((smoothed.mean(0) - smoothed.std(0)).min())


def test_sensitivity_panel_counts_iterations_to_the_threshold(tmp_path):
    speeds = {1e-2: 4.0, 1e-3: 2.0, 1e-4: 0.2}  # the slowest never gets below the threshold
    for lr, speed in speeds.items():
        for seed in range(2):
            write_run(tmp_path / "r", "t", "sgd_hd", seed, classification_rows(seed), step_rows(seed, speed=speed),
                      variant=f"lr={lr}", config={"optim.lr": lr})
    spec = _tmp_spec(tmp_path, """
        figures:
          alpha0: {kind: sensitivity, task: t, source: steps, y: loss, param: optim.lr, smooth: 2,
                   thresholds: {t: {SGD: 1.0}}, optims: [sgd_hd]}
        style: {families: {SGD: [sgd_hd]}}
        """)
    ax = draw_figure(spec, spec.figures[0], load_runs(tmp_path / "r")).axes[0]
    curve = next(line for line in ax.get_lines() if line.get_marker() == "o")
    expected = []
    for lr in sorted(speeds):
        reached = []
        for seed in range(2):
            rows = step_rows(seed, speed=speeds[lr])
            for i, row in enumerate(rows):
                window = [r["loss"] for r in rows[max(0, i - 1): i + 1]]
                if sum(window) / len(window) <= 1.0:
                    reached.append(row["step"])
                    break
        expected.append(np.mean(reached) if reached else np.nan)
    assert curve.get_label() == "sgd_hd (≤ 1)" and list(curve.get_xdata()) == sorted(speeds)
    np.testing.assert_allclose(curve.get_ydata(), expected)
    assert np.isnan(expected[0]) and not np.isnan(expected[1:]).any()
    missed = [line for line in ax.get_lines() if line.get_marker() == "^"]  # never reached (not diverged: x)
    assert len(missed) == 1 and list(missed[0].get_xdata()) == [1e-4]
    assert not [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert ax.get_xlabel() == "learning rate (optim.lr)"
    assert ax.get_xscale() == "log"


@pytest.mark.parametrize("kind,name", [("figure", p.stem) for p in sorted((CONFIGS / "figure").glob("*.yaml"))]
                         + [("table", p.stem) for p in sorted((CONFIGS / "table").glob("*.yaml"))])
def test_every_shipped_spec_loads(kind, name):
    spec = (load_figure_spec if kind == "figure" else load_table_spec)(name)
    assert spec.name == name and spec.results_dir.startswith("results/")


def test_spec_mistakes_name_the_key(tmp_path):
    with pytest.raises(SpecError, match="figures.f.rows\\[0\\]: unknown key 'ylog'"):
        _tmp_spec(tmp_path, "figures: {f: {task: t, rows: [{y: loss, ylog: true}]}}")
    with pytest.raises(SpecError, match="no y column"):
        _tmp_spec(tmp_path, "figures: {f: {task: t}}")
    with pytest.raises(SpecError, match="needs 'thresholds'"):
        _tmp_spec(tmp_path, "figures: {f: {task: t, y: loss, kind: sensitivity, param: optim.lr}}")
    with pytest.raises(SpecError, match="known: .*hypergrad"):
        load_figure_spec("no_such_figure")


def test_command_line_draws_a_spec_into_png_and_pdf(hypergrad_results, tmp_path):
    spec = tmp_path / "small.yaml"
    spec.write_text("tasks: {logreg: [mnist_logreg, digits_logreg]}\n"
                    "figures: {alpha: {task: logreg, y: lr, optims: [sgd_hd]}, loss: {task: logreg, y: val_loss}}\n")
    proc = subprocess.run([sys.executable, "-m", "optbench.plot", f"figure={spec}", "only=alpha",
                           f"results_dir={hypergrad_results}", f"plots_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "small" / "alpha.png").stat().st_size > 5000 and (tmp_path / "small" / "alpha.pdf").exists()
    assert not (tmp_path / "small" / "loss.png").exists()  # only=alpha
    unknown = subprocess.run([sys.executable, "-m", "optbench.plot", f"figure={spec}", "only=[alpha,beta]"],
                             capture_output=True, text=True, cwd=REPO)
    assert unknown.returncode == 2 and "has no figure beta; its figures: alpha, loss" in unknown.stderr
    bad = subprocess.run([sys.executable, "-m", "optbench.plot", "figure=nope"], capture_output=True, text=True,
                         cwd=REPO)
    assert bad.returncode == 2 and "figure='nope'" in bad.stderr


def test_aggmo_figures_pick_the_metric_of_each_task_and_the_damping_runs(tmp_path):
    root = tmp_path / "r"
    for optim, config in (("momentum", {"optim.momentum": 0.9}), ("nesterov", {}), ("adam", {}),
                          ("aggmo", {"optim.betas": [0.0, 0.9, 0.99]})):
        write_run(root, "digits_mlp", optim, 0, classification_rows(0), config=config)
    quad = [{k: v for k, v in r.items() if "acc" not in k} for r in classification_rows(0)]
    for beta in (0.9, 0.99, 0.999):
        write_run(root, "noisy_quadratic", "momentum", 0, quad, variant=f"momentum={beta}",
                  config={"optim.momentum": beta})
    for betas in ([0.0, 0.9, 0.99], [0.0, 0.9, 0.99, 0.999]):
        write_run(root, "noisy_quadratic", "aggmo", 0, quad, variant=f"betas={len(betas)}",
                  config={"optim.betas": betas})
    spec = load_figure_spec("aggmo")
    runs = load_runs(root)
    curves = draw_figure(spec, next(f for f in spec.figures if f.name == "curves"), runs)
    axes = _grid(curves, 2, 4)
    assert axes[1, 1].get_ylabel() == "validation accuracy" and axes[1, 1].get_yscale() == "linear"
    assert [line.get_label() for line in axes[0, 1].get_lines()] == ["CM", "Nesterov", "Adam", "AggMo"]
    assert axes[0, 1].get_title() == "digits_mlp"  # the QUICK stand-in says what it is
    damping = draw_figure(spec, next(f for f in spec.figures if f.name == "damping"), runs)
    left, right = damping.axes[:2]
    assert [line.get_label() for line in left.get_lines()] == [
        "CM beta=0.9", "CM beta=0.99", "CM beta=0.999", "AggMo [0, 0.9, 0.99]", "AggMo [0, 0.9, 0.99, 0.999]"]
    assert right.get_ylabel() == "validation loss" and right.get_yscale() == "log"
    colors = {to_hex(line.get_color()) for line in left.get_lines()}
    assert len(colors) == 2  # one colour per family: CM and AggMo


def test_yellowfin_sync_and_async_figures_split_runs_by_staleness(tmp_path):
    root = tmp_path / "r"
    for staleness in (0, 15):
        variant = "default" if staleness == 0 else "trainer.staleness=15"
        optims = ("momentum", "adam", "yellowfin") if staleness == 0 else ("adam", "yellowfin", "yellowfin_closed_loop")
        for optim in optims:
            steps = step_rows(0, speed=1.0 if staleness == 0 else 0.5)
            if optim.startswith("yellowfin"):
                steps = [{**row, "mu": 0.5 + 0.001 * row["step"]} for row in steps]
            write_run(root, "digits_mlp", optim, 0, classification_rows(0), steps, variant=variant,
                      config={"trainer.staleness": staleness})
    spec = load_figure_spec("yellowfin")
    runs = load_runs(root)
    for name, expected in (("sync", ["momentum SGD", "Adam", "YellowFin"]),
                           ("async", ["Adam", "YellowFin", "closed-loop YellowFin"])):
        axes = _grid(draw_figure(spec, next(f for f in spec.figures if f.name == name), runs), 3, 4)
        assert [line.get_label() for line in axes[0, 0].get_lines()] == expected
        assert [ax.get_ylabel() for ax in axes[:, 0]] == ["training loss (smoothed)", "learning rate", "momentum"]
        mu_lines = axes[2, 0].get_lines()
        assert [line.get_label() for line in mu_lines] == [e for e in expected if "YellowFin" in e]
        np.testing.assert_allclose(mu_lines[0].get_ydata(), [0.5 + 0.001 * r["step"] for r in step_rows(0)])
        speed = 1.0 if name == "sync" else 0.5
        losses = np.array([r["loss"] for r in step_rows(0, speed=speed)])
        smoothed = [losses[max(0, i - 49): i + 1].mean() for i in range(len(losses))]
        np.testing.assert_allclose(axes[0, 0].get_lines()[0].get_ydata(), smoothed)
