"""The tuning protocol: grids as config (configs/tune), the point a run stands for, the selection of each
optimizer's setting (recomputed here from the CSVs), the tuned table, the sensitivity figure, confirmation on
more seeds, and random search through Optuna."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, compose
from optbench import results, rundir, selection, tuning
from optbench.errors import ConfigError
from optbench.run_config import default_run_config
from test_plot_rundirs import classification_rows, write_run

TINY = ["task.model_kwargs.hidden=[16]", "task.epochs=2", "device=cpu"]


def plain(*overrides: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose(*overrides), resolve=True)


def test_lr_grid_is_a_log_grid_around_each_optimizers_own_lr():
    adam = plain("task=digits_logreg", "optim=adam", "+tune=lr")
    assert [p["optim.lr"] for p in tuning.grid(adam)] == [3.162e-05, 1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2, 3.162e-2]
    momentum = plain("task=digits_logreg", "optim=momentum", "+tune=lr")
    assert [p["optim.lr"] for p in tuning.grid(momentum)][3] == 0.01


def test_a_point_becomes_the_settings_and_names_the_run_as_the_same_setting_by_hand():
    tuned = tuning.apply(plain("task=digits_logreg", "optim=adam", "+tune=lr", "tune.point=2"))
    assert tuned["optim"]["lr"] == 3.162e-4 and tuned["tune"]["setting"] == {"optim.lr": 3.162e-4}
    by_hand = plain("task=digits_logreg", "optim=adam", "optim.lr=3.162e-4")
    assert rundir.variant_name(tuned, default_run_config(tuned)) == \
        rundir.variant_name(by_hand, default_run_config(by_hand)) == "lr=0.0003162"


def test_lr_momentum_varies_the_last_key_fastest_and_uses_each_familys_momentum():
    points = tuning.grid(plain("task=digits_logreg", "optim=momentum", "+tune=lr_momentum"))
    assert len(points) == 15 and points[:3] == [{"optim.lr": 0.001, "optim.momentum": m} for m in (0.5, 0.9, 0.99)]
    adam = tuning.grid(plain("task=digits_logreg", "optim=adam", "+tune=lr_momentum"))
    assert len(adam) == 15 and adam[1]["optim.betas"] == [0.9, 0.999]
    aggmo = tuning.apply(plain("task=digits_logreg", "optim=aggmo", "+tune=lr_momentum", "tune.point=14"))
    assert aggmo["optim"]["betas"] == [0.0, 0.9, 0.99, 0.999] and aggmo["optim"]["lr"] == 0.1


def test_yellowfin_baselines_are_the_papers_lists():
    adam = tuning.grid(plain("task=digits_logreg", "optim=adam", "+tune=yellowfin_baselines"))
    momentum = tuning.grid(plain("task=digits_logreg", "optim=momentum", "+tune=yellowfin_baselines"))
    assert [p["optim.lr"] for p in adam] == [0.0005, 0.001, 0.005, 0.01, 0.05]
    assert [p["optim.lr"] for p in momentum] == [0.05, 0.1, 0.5, 1.0, 5.0]


@pytest.mark.parametrize("overrides, message", [
    (["optim=adam", "+tune=lr", "tune.point=7"], "outside the grid of 7 points for optimizer adam"),
    (["optim=expectigrad", "+tune=lr_momentum", "tune.point=0"], "optim.momentum is not a setting of optimizer "
                                                                  "expectigrad"),
    (["optim=expectigrad", "+tune=yellowfin_baselines", "tune.point=0"], "no search space for optimizer"),
    (["optim=adam", "+tune=lr_random", "tune.lr_scale=-2"], "must be a positive number"),
])
def test_bad_tuning_input_is_a_clear_error(overrides, message):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper") if "+tune=lr_random" in overrides else None
    with pytest.raises(ConfigError, match=message.replace("{", r"\{")):
        tuning.apply(plain("task=digits_logreg", *overrides))


def test_a_space_entry_must_be_values_or_scale():
    cfg = plain("task=digits_logreg", "optim=adam", "+tune=lr", "tune.point=0")
    cfg["tune"]["space"] = {"optim.lr": {"steps": [1]}}
    with pytest.raises(ConfigError, match=r"write \{values: \[...\]\} or \{scale: \[...\]\}"):
        tuning.apply(cfg)


# --------------------------------------------------------------------------------------------- selection
def _val_rows(seed: int, values, status_values=None):
    """classification_rows with the given val_loss per epoch and test_loss = 10 x epoch + seed (so the epoch a
    test value was read at is visible)."""
    rows = classification_rows(seed)[: len(values)]
    for epoch, (row, value) in enumerate(zip(rows, values)):
        row["val_loss"], row["test_loss"] = value, 10.0 * epoch + seed
    return rows


@pytest.fixture
def grid_results(tmp_path):
    """sgd at three learning rates (lr=0.1 best by its best epoch, lr=1 best at the end, lr=10 diverged once)
    and adam at two tied settings."""
    vals = {"lr=0.1": ([1.0, 0.2, 0.5], [1.0, 0.3, 0.6]), "lr=1.0": ([1.0, 0.4, 0.35], [1.0, 0.5, 0.36]),
            "lr=10.0": ([1.0, 0.01, 0.01], None)}
    for variant, (first, second) in vals.items():
        lr = float(variant.split("=")[1])
        write_run(tmp_path, "t", "sgd", 0, _val_rows(0, first), variant=variant, config={"optim.lr": lr})
        if second is None:
            write_run(tmp_path, "t", "sgd", 1, _val_rows(1, [1.0, math.nan]), variant=variant,
                      config={"optim.lr": lr}, status="diverged")
        else:
            write_run(tmp_path, "t", "sgd", 1, _val_rows(1, second), variant=variant, config={"optim.lr": lr})
    for lr in (10.0, 2.0):  # a tie; "lr=10.0" sorts before "lr=2.0" as text, after it as a number
        write_run(tmp_path, "t", "adam", 0, _val_rows(0, [1.0, 0.5]), variant=f"lr={lr}", config={"optim.lr": lr})
    return tmp_path


def test_over_the_lr_grid_a_damping_study_beside_it_is_not_a_candidate(grid_results):
    for seed in (0, 1):  # a momentum study at one lr, better than every lr of the grid
        write_run(grid_results, "t", "sgd", seed, _val_rows(seed, [1.0, 0.05]), variant="momentum=0.99",
                  config={"optim.lr": 1.0, "optim.momentum": 0.99})
    for variant in ("lr=0.1", "lr=1.0", "lr=10.0"):
        for path in (grid_results / "t/sgd" / variant).glob("seed*"):
            config = results.read_config(path)
            config["optim"]["momentum"] = 0.9
            (path / "config.yaml").write_text(__import__("yaml").safe_dump(config))
    metrics = results.load(grid_results, optim="sgd")
    assert selection.select_tuned(metrics)["variant"].item() == "momentum=0.99"
    assert selection.select_tuned(metrics, over=["optim.lr"])["variant"].item() == "lr=0.1"


def _csv(path: Path, column: str) -> np.ndarray:
    with open(path / "metrics.csv", newline="") as f:
        return np.array([float(r[column]) for r in csv.DictReader(f)])


def test_selection_equals_numbers_recomputed_from_the_csvs(grid_results):
    metrics = results.load(grid_results)
    table = selection.settings_table(metrics, "loss", "best")
    sgd = table[table["optim"] == "sgd"].set_index("variant")
    assert sgd["rank"].to_dict() == {"lr=0.1": 1, "lr=1.0": 2, "lr=10.0": 3}  # a diverged seed loses
    runs = [grid_results / "t/sgd/lr=0.1" / f"seed{s}" for s in (0, 1)]
    best = [_csv(r, "val_loss").min() for r in runs]
    at = [_csv(r, "test_loss")[_csv(r, "val_loss").argmin()] for r in runs]
    assert sgd.loc["lr=0.1", "val"] == pytest.approx(np.mean(best))
    assert sgd.loc["lr=0.1", "val_std"] == pytest.approx(np.std(best, ddof=1))
    assert sgd.loc["lr=0.1", "test"] == pytest.approx(np.mean(at)) and sgd.loc["lr=10.0", "val"] == math.inf
    assert sgd.loc["lr=10.0", "diverged"] == 1 and sgd.loc["lr=0.1", "setting"] == "lr=0.1"
    final = selection.select_tuned(metrics, "loss", "final").set_index("optim")
    assert final.loc["sgd", "variant"] == "lr=1.0"  # judged by the last epoch instead
    assert final.loc["sgd", "val"] == pytest.approx(np.mean([0.35, 0.36]))
    assert final.loc["sgd", "test"] == pytest.approx(np.mean([20.0, 21.0]))
    assert final.loc["adam", "variant"] == "lr=2.0"  # a tie goes to the smaller value
    assert selection.select_tuned(metrics).set_index("optim")["edge"].to_dict() == {"adam": "lr", "sgd": "lr"}


def test_tuned_table_and_sensitivity_figure_from_the_command_line(grid_results, tmp_path):
    out = subprocess.run([sys.executable, "-m", "optbench.plot", "table=tuned", f"results_dir={grid_results}",
                          f"plots_dir={tmp_path / 'plots'}"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("| sgd"))
    assert "lr=0.1" in line and f"{np.mean([0.2, 0.3]):.4g} ± {np.std([0.2, 0.3], ddof=1):.2g}" in line
    assert r"\begin{tabular}" in (tmp_path / "plots/tables/tuned.tex").read_text()
    fig = subprocess.run([sys.executable, "-m", "optbench.plot", "figure=sensitivity",
                          f"results_dir={grid_results}", f"plots_dir={tmp_path / 'plots'}"],
                         capture_output=True, text=True, cwd=REPO)
    assert fig.returncode == 0, fig.stderr
    assert (tmp_path / "plots/sensitivity.png").stat().st_size > 5000


def test_sensitivity_panel_marks_diverged_and_chosen_settings(grid_results):
    import matplotlib.pyplot as plt

    from optbench.plot.sensitivity import draw_panel, lr_profile
    from optbench.plot.style import Style

    metrics = results.load(grid_results, optim="sgd")
    settings = selection.settings_table(metrics)
    profile = lr_profile(settings, selection.run_scores(metrics))
    fig, ax = plt.subplots()
    draw_panel(ax, profile, Style(), "loss", "best")
    line, crosses, star = ax.get_lines()
    assert list(line.get_xdata()) == [0.1, 1.0] and list(crosses.get_xdata()) == [10.0]
    assert list(star.get_xdata()) == [0.1] and star.get_marker() == "*"
    plt.close(fig)


def test_a_spec_with_select_tuned_keeps_each_optimizers_tuned_setting(grid_results, tmp_path):
    from optbench.plot.runs import load_runs
    from optbench.plot.specs import load_table_spec
    from optbench.plot.tables import build_tables

    spec = tmp_path / "t.yaml"
    spec.write_text("select: tuned\ntasks:\n  t: {metric: loss}\n")
    table = build_tables(load_table_spec(str(spec)), load_runs(grid_results)).tasks[0]
    assert [(r.group.optim, r.group.variant) for r in table.rows] == [("adam", "lr=2.0"), ("sgd", "lr=0.1")]
    spec.write_text("select: best\ntasks:\n  t: {metric: loss}\n")
    with pytest.raises(ValueError, match="select='best' must be one of all, tuned"):
        load_table_spec(str(spec))


# ------------------------------------------------------------------------------------- a real tuning sweep
@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, str]:
    """The issue's check on digits: sgd, adam, aggmo through tune=lr3, 2 seeds (a small MLP, 2 epochs)."""
    root = tmp_path_factory.mktemp("tuned")
    proc = subprocess.run([sys.executable, "main.py", "-m", "task=digits_mlp", "optim=sgd,adam,aggmo", "+tune=lr3",
                           "seed=0,1", *TINY, f"results_dir={root}", "trainer.threads=1"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc.stdout


def test_a_tuning_sweep_runs_the_grid_and_ends_with_the_chosen_settings(sweep):
    root, stdout = sweep
    metrics = results.load(root)
    assert metrics.groupby("optim")["variant"].nunique().to_dict() == {"adam": 3, "aggmo": 3, "sgd": 3}
    assert metrics.groupby("optim")["path"].nunique().to_dict() == {"adam": 6, "aggmo": 6, "sgd": 6}
    chosen = selection.select_tuned(metrics).set_index("optim")
    for optim, row in chosen.iterrows():  # recomputed from the CSVs: the lr whose mean best val_loss is lowest
        means = {}
        for variant in metrics[metrics["optim"] == optim]["variant"].unique():
            runs = sorted((root / "digits_mlp" / optim / variant).glob("seed*"))
            means[variant] = np.mean([_csv(r, "val_loss").min() for r in runs])
        assert row["variant"] == min(means, key=means.get)
        assert row["val"] == pytest.approx(means[row["variant"]])
    assert "each optimizer at its setting with the best val_loss" in stdout


def test_confirming_reruns_the_chosen_setting_on_more_seeds(sweep, tmp_path):
    import shutil

    root, _ = sweep
    copy = tmp_path / "r"
    shutil.copytree(root / "digits_mlp" / "sgd", copy / "digits_mlp" / "sgd")
    chosen = selection.select_tuned(results.load(copy))
    [command] = selection.confirm_commands(chosen, str(copy), 3)
    assert "task.epochs=2" in command and "task.model_kwargs.hidden=[16]" in command
    proc = subprocess.run([sys.executable, "-m", "optbench.selection", f"results_dir={copy}", "confirm_seeds=3",
                           "device=cpu"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seeds = sorted(p.name for p in (copy / "digits_mlp" / "sgd" / chosen["variant"].item()).glob("seed*"))
    assert seeds == ["seed0", "seed1", "seed2"] and proc.stdout.count("already finished") == 2


def test_random_search_through_optuna_samples_the_lr_with_a_fixed_seed(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    outcome = []
    for name in ("a", "b"):
        proc = subprocess.run([sys.executable, "main.py", "-m", "task=digits_logreg", "optim=adam", "+tune=lr_random",
                               "hydra.sweeper.n_trials=3", "task.epochs=1", "device=cpu",
                               f"results_dir={tmp_path / name}"], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lrs = sorted(float(results.read_config(p)["optim"]["lr"])
                     for p in (tmp_path / name).glob("digits_logreg/adam/*/seed0"))
        outcome.append(lrs)
    assert len(outcome[0]) == 3 and outcome[0] == outcome[1]  # the sampler's seed fixes the trials
    assert all(3.162e-05 <= lr <= 3.162e-2 for lr in outcome[0])


def test_tune_confirm_seeds_reruns_the_chosen_setting_when_the_sweep_ends(tmp_path):
    proc = subprocess.run([sys.executable, "main.py", "-m", "task=digits_logreg", "optim=sgd", "+tune=lr3",
                           "tune.confirm_seeds=2", "task.epochs=1", "device=cpu", f"results_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chosen = selection.select_tuned(results.load(tmp_path))["variant"].item()
    seeds = {p.parent.name: sorted(s.name for s in p.parent.glob("seed*"))
             for p in tmp_path.glob("digits_logreg/sgd/*/seed0")}
    assert seeds.pop(chosen) == ["seed0", "seed1"] and all(v == ["seed0"] for v in seeds.values())
    assert "optbench: confirming: python main.py -m task=digits_logreg optim=sgd" in proc.stdout


def test_conditions_such_as_staleness_are_chosen_within_not_against(grid_results):
    for seed in (0, 1):  # asynchronous sgd at one lr: far worse, but the only async setting
        write_run(grid_results, "t", "sgd", seed, _val_rows(seed, [1.0, 0.9]), variant="trainer.staleness=15",
                  config={"optim.lr": 0.1, "trainer.staleness": 15})
    chosen = selection.select_tuned(results.load(grid_results, optim="sgd"), over=["optim.lr"])
    assert sorted(chosen["variant"]) == ["lr=0.1", "trainer.staleness=15"]


def test_the_awd_lstm_grid_spans_sgds_effective_step_of_30():
    """lr / (1 - beta) for CM, lr / K sum 1 / (1 - beta_i) for AggMo: each grid contains a point within a factor
    of 3 of AWD-LSTM's plain SGD at lr 30."""
    for optim, effective in (("momentum", lambda lr: lr / 0.1), ("aggmo", lambda lr: lr / 3 * (1 + 10 + 100))):
        points = tuning.grid(plain("experiment=aggmo/ptb_awd", f"optim={optim}", "+tune=aggmo_ptb"))
        assert any(10 <= effective(p["optim.lr"]) <= 90 for p in points)
    assert len(tuning.grid(plain("experiment=aggmo/ptb_awd", "optim=adam", "+tune=aggmo_ptb"))) == 4
