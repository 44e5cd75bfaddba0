"""Runs as pandas DataFrames (optbench.results), the summary table, the quickstart's ranking figure, and the
first-hour conveniences: thread choice, progress lines, help texts, overrides that cannot take effect."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, compose
from optbench import results, rundir, summary, threads
from optbench.errors import ConfigError
from optbench.train import run

TINY = ["task=digits_mlp", "task.model_kwargs.hidden=[16]", "task.epochs=2", "device=cpu"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Three optimizers x two seeds, and one diverged run."""
    root = tmp_path_factory.mktemp("sweep")
    for optim in ("sgd", "adam", "aggmo"):
        for seed in (0, 1):
            run(compose(*TINY, f"optim={optim}", f"seed={seed}", f"results_dir={root}"))
    run(compose(*TINY, "optim=sgd", "optim.lr=1e12", "trainer.log_every=1", f"results_dir={root}"))
    return root


def test_load_gives_one_tidy_row_per_run_and_epoch(sweep):
    df = results.load(sweep)
    assert df.groupby(["optim"]).size().to_dict() == {"adam": 6, "aggmo": 6, "sgd": 6 + 2}  # 3 rows a run
    assert {"task", "optim", "variant", "seed", "status", "optim.lr", "task.batch_size", "epoch", "val_acc"} <= set(
        df.columns)
    first = df[(df["optim"] == "adam") & (df["seed"] == 1)].sort_values("epoch")
    on_disk = read_csv(Path(first["path"].iloc[0]) / rundir.METRICS)
    assert first["val_loss"].tolist() == [float(r["val_loss"]) for r in on_disk]
    assert set(df["status"]) == {"finished", "diverged"}
    assert results.load(sweep, optim="adam", where={"optim.lr": 1e-3})["seed"].nunique() == 2
    assert results.load(sweep, status="diverged")["optim.lr"].unique().tolist() == [1e12]
    steps = results.load_steps(sweep, optim=["sgd", "aggmo"])
    assert set(steps["optim"]) == {"sgd", "aggmo"} and {"step", "loss", "lr"} <= set(steps.columns)


def test_a_run_being_written_is_read_as_far_as_it_goes(tmp_path, sweep):
    import shutil

    source = next(sweep.glob("digits_mlp/adam/*/seed0"))
    copy = tmp_path / source.relative_to(sweep)
    shutil.copytree(source, copy)
    with open(copy / rundir.METRICS, "a") as f:
        f.write("3,60,1.5,0.00")  # a row cut off mid-write (no newline)
    df = results.load(tmp_path)
    assert df["epoch"].tolist() == [0, 1, 2]


def test_a_parent_directory_loads_every_results_directory_inside_it(tmp_path, sweep):
    """``load("results")`` finds results/quickstart/... and results/aggmo/... alike; runs with the same identity
    in two results directories stay apart (the summary splits them by results_dir)."""
    import shutil

    for name in ("quickstart", "aggmo"):
        shutil.copytree(sweep / "digits_mlp" / "adam", tmp_path / "results" / name / "digits_mlp" / "adam")
    df = results.load(tmp_path / "results")
    assert sorted(df["results_dir"].unique()) == [str(tmp_path / "results" / n) for n in ("aggmo", "quickstart")]
    assert len(df) == 2 * len(results.load(sweep, optim="adam"))
    table = summary.summarize(df)
    assert table["seeds"].tolist() == [2, 2] and table["results_dir"].str.endswith(("aggmo", "quickstart")).all()
    assert table["optim"].tolist() == ["adam", "adam"]


def test_summary_table_has_one_row_per_optimizer_with_seed_spread(sweep):
    metrics = results.load(sweep)
    table = summary.summarize(metrics[metrics["optim"] != "sgd"])
    assert table["optim"].tolist() == ["adam", "aggmo"] and table["seeds"].tolist() == [2, 2]
    per_run = summary.per_run(metrics[metrics["optim"] == "adam"])
    mean, std = per_run["final"].mean(), per_run["final"].std(ddof=1)
    assert table.loc[table["optim"] == "adam", "final val_acc"].item() == f"{mean:.4g} ± {std:.2g}"
    best_epoch = metrics[(metrics["optim"] == "adam") & (metrics["seed"] == 0)].set_index("epoch")
    expected = best_epoch.loc[best_epoch["val_loss"].idxmin(), "test_acc"]
    assert per_run.loc[per_run["seed"] == 0, "test_at_best"].item() == expected
    text = subprocess.run([sys.executable, "-m", "optbench.summary", f"results_dir={sweep}"], capture_output=True,
                          text=True, check=True).stdout
    assert "| sgd" in text and "1 diverged" in text and "final val_acc" in text


def test_a_sweep_prints_the_summary_when_it_ends(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "-m", *TINY, "optim=sgd,adam",
                           f"results_dir={tmp_path}"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "### digits_mlp" in proc.stdout and "| adam" in proc.stdout and "| sgd" in proc.stdout


def test_ranking_figure_orders_optimizers_by_final_validation_loss(sweep, tmp_path):
    from optbench.plot.ranking import final_values, ranking_figure, _labelled

    metrics = _labelled(results.load(sweep))
    ranked = final_values(metrics, "val_loss").sort_values("mean")
    finals = metrics[metrics["status"] == "finished"].sort_values("epoch").groupby(["label", "seed"])[
        "val_loss"].last().groupby("label").mean()
    assert list(ranked.index) == list(finals.sort_values().index)
    assert set(metrics["label"]) == {"adam", "aggmo", "sgd", "sgd (lr=1000000000000.0, trainer.log_every=1)"} or \
        set(metrics["label"]) == {"adam", "aggmo", "sgd", "sgd (lr=1000000000000.0)"}
    proc = subprocess.run([sys.executable, "-m", "optbench.plot", f"results_dir={sweep}", "task=digits_mlp",
                           "ranking=true", f"out={tmp_path / 'quick'}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "quick.png").stat().st_size > 10_000 and (tmp_path / "quick.pdf").exists()
    paths = ranking_figure(results.load(sweep), "digits_mlp", tmp_path / "direct")
    assert [p.suffix for p in paths] == [".png", ".pdf"]


def test_threads_auto_gives_small_models_one_thread(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    small, large = torch.nn.Linear(10, 10), torch.nn.Linear(2000, 1000)
    cpu = torch.device("cpu")
    assert threads.choose("auto", small, cpu) == 1
    assert 1 <= threads.choose("auto", large, cpu) <= (torch.multiprocessing.cpu_count() or 1)
    assert threads.choose(3, small, cpu) == 3
    assert threads.choose("auto", small, torch.device("meta")) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose("auto", small, cpu) is None  # the user's setting stands


def test_outside_a_terminal_each_epoch_logs_one_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="optbench"):
        run(compose(*TINY, "optim=adam", "trainer.progress=false", f"results_dir={tmp_path}"))
    lines = [r.getMessage() for r in caplog.records if r.name == "optbench"]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: train_loss=")
    assert "val_acc=" in lines[0] and "it/s, ETA 0:00:0" in lines[0] and lines[1].endswith("ETA 0:00:00")


def test_help_texts_list_what_can_be_run():
    plot = subprocess.run([sys.executable, "-m", "optbench.plot", "--help"], capture_output=True, text=True)
    assert plot.returncode == 0 and "figures: adamp, aggmo" in plot.stdout and "digits_mlp" in plot.stdout
    main = subprocess.run([sys.executable, str(REPO / "main.py"), "--help"], capture_output=True, text=True,
                          cwd=REPO)
    assert main.returncode == 0
    assert "task: " in main.stdout and "optim: " in main.stdout and "figure:" not in main.stdout


def test_a_schedule_setting_the_schedule_never_reads_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="optim.lr_schedule.lr_decay=0.5 has no effect: the schedule is "
                                          "'constant'"):
        run(compose(*TINY, "optim.lr_schedule.lr_decay=0.5", f"results_dir={tmp_path}"))
    run_dir = run(compose(*TINY, "optim.lr_schedule.name=exponential", "optim.lr_schedule.lr_decay=0.5",
                          f"results_dir={tmp_path}"))
    lrs = [float(r["lr"]) for r in read_csv(run_dir / rundir.METRICS)]
    assert lrs == pytest.approx([0.01, 0.01, 0.005])


def test_the_composed_config_shows_the_values_the_run_uses():
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose("task=cifar10", "optim=momentum"), resolve=True)
    assert cfg["optim"]["weight_decay"] == cfg["task"]["weight_decay"] == 5e-4
    assert cfg["optim"]["lr_schedule"] == {"name": "step", "milestones": [150, 250], "lr_decay": 0.1,
                                           "min_factor": 0.0, "unit": None, "warmup_steps": None, "factor": None,
                                           "patience": None, "threshold": None, "metric": None}
    assert OmegaConf.to_container(compose("optim=adamw"), resolve=True)["optim"]["weight_decay"] == 1e-2


def test_no_plot_module_parses_csv_itself():
    sources = {p.name: p.read_text() for p in (REPO / "src" / "optbench" / "plot").glob("*.py")}
    offenders = [name for name, text in sources.items() if "import csv" in text or "np.genfromtxt" in text
                 or "np.loadtxt" in text]
    assert not offenders, offenders
    assert results.read_log(Path("/nonexistent")).empty
