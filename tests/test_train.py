"""End-to-end behaviour of the trainer on the real configs: run-directory contract, resume, divergence,
sweeps and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, compose
from optbench.checks import ConfigError
from optbench.data.errors import DatasetNotFoundError
from optbench.checkpoints import CorruptCheckpointError
from optbench.train import run

FOUNDATION_TASKS = ["digits_mlp", "digits_logreg", "mnist_logreg", "mnist_mlp", "fmnist_logreg", "fmnist_mlp"]
BASELINES = ["sgd", "momentum", "nesterov", "adam", "adamw", "amsgrad"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout + proc.stderr)
    return proc


@pytest.mark.parametrize("task", FOUNDATION_TASKS)
def test_one_epoch_of_each_task_writes_the_run_directory(task, tmp_path, mini_data_dir):
    cfg = compose(f"task={task}", "optim=sgd", "task.epochs=1", f"results_dir={tmp_path}",
                  f"data_dir={mini_data_dir}", "device=cpu", "trainer.log_every=1")
    run_dir = run(cfg)
    assert run_dir == tmp_path / task / "sgd" / "task.epochs=1" / "seed0"
    for name in ("config.yaml", "metrics.csv", "steps.csv", "checkpoint.pth", "best.pth", "summary.json"):
        assert (run_dir / name).exists(), name
    metrics = read_csv(run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in metrics] == [0, 1]
    for column in ("epoch", "step", "time_s", "lr", "train_loss", "val_loss", "test_loss",
                   "train_acc", "val_acc", "test_acc"):
        assert column in metrics[0], column
    assert metrics[0]["step"] == "0" and float(metrics[0]["time_s"]) == 0.0
    for row in metrics:
        for split in ("train", "val", "test"):
            assert 0.0 <= float(row[f"{split}_acc"]) <= 1.0
    steps = read_csv(run_dir / "steps.csv")
    assert list(steps[0])[:4] == ["step", "epoch", "loss", "lr"]
    assert int(steps[-1]["step"]) == int(metrics[-1]["step"]) > 0
    checkpoint = torch.load(run_dir / "checkpoint.pth", weights_only=True)
    assert checkpoint["epoch"] == 1 and "model" in checkpoint and "optimizer" in checkpoint
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["final"]["epoch"] == 1


def test_training_learns_and_official_test_split_is_used(tmp_path, mini_data_dir):
    cfg = compose("task=mnist_logreg", "optim=adam", "task.epochs=5", f"results_dir={tmp_path}",
                  f"data_dir={mini_data_dir}", "device=cpu")
    metrics = read_csv(run(cfg) / "metrics.csv")
    assert float(metrics[-1]["val_acc"]) > 0.9 > float(metrics[0]["val_acc"])
    assert float(metrics[-1]["train_loss"]) < 0.5 * float(metrics[0]["train_loss"])


@pytest.mark.parametrize("optim", BASELINES)
def test_every_baseline_optimizer_runs(optim, tmp_path):
    cfg = compose(f"optim={optim}", "task=digits_logreg", "task.epochs=1", f"results_dir={tmp_path}",
                  "device=cpu")
    assert json.loads((run(cfg) / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("keep, files", [("last", {"checkpoint.pth", "best.pth"}), ("best", {"best.pth"}),
                                         ("all", {"checkpoint.pth", "checkpoint.prev.pth", "best.pth"})])
def test_trainer_keep_decides_which_checkpoints_a_finished_run_keeps(keep, files, tmp_path):
    run_dir = run(compose("task.epochs=2", f"trainer.keep={keep}", f"results_dir={tmp_path}", "device=cpu",
                          "task.model_kwargs.hidden=[16]"))
    assert {p.name for p in run_dir.glob("*.pth")} == files


def test_finished_run_is_not_redone(tmp_path, capsys):
    cfg = compose("task.epochs=1", f"results_dir={tmp_path}", "device=cpu")
    run_dir = run(cfg)
    stamp = (run_dir / "metrics.csv").stat().st_mtime_ns
    assert run(cfg) == run_dir
    assert "already finished" in capsys.readouterr().out
    assert (run_dir / "metrics.csv").stat().st_mtime_ns == stamp


def test_divergence_is_recorded_and_logs_are_kept(tmp_path):
    cfg = compose("optim=sgd", "optim.lr=1e12", "task.epochs=3", f"results_dir={tmp_path}", "device=cpu",
                  "trainer.log_every=1")
    run_dir = run(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    steps = read_csv(run_dir / "steps.csv")
    assert steps and not all(map(lambda r: abs(float(r["loss"])) < float("inf"), steps))
    assert read_csv(run_dir / "metrics.csv")[0]["epoch"] == "0"


def test_lr_schedule_step_decay_from_the_command_line(tmp_path):
    cfg = compose("optim=momentum", "task.epochs=4", "optim.lr_schedule.name=step",
                  "optim.lr_schedule.milestones=[1,3]", "optim.lr_schedule.lr_decay=0.5",
                  f"results_dir={tmp_path}", "device=cpu")
    lrs = [float(r["lr"]) for r in read_csv(run(cfg) / "metrics.csv")]
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


def test_variant_names_the_overrides(tmp_path):
    cfg = compose("optim=momentum", "optim.lr=0.05", "optim.momentum=0.5", "seed=3", "task.epochs=1",
                  f"results_dir={tmp_path}", "device=cpu")
    assert run(cfg) == tmp_path / "digits_mlp" / "momentum" / "lr=0.05,momentum=0.5,task.epochs=1" / "seed3"


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-0.1", "optim.lr must be a finite number >= 0, got -0.1"),
    ("optim.lr=nan", "optim.lr must be a finite number >= 0, got nan"),
    ("optim.momentum=1.5", "optim.momentum must be in [0, 1), got 1.5"),
    ("+optim.dampening=1.5", "optim.dampening must be in [0, 1], got 1.5"),
    ("task.epochs=0", "task.epochs=0 must be an integer >= 1"),
    ("task.batch_size=0", "task.batch_size=0 must be an integer >= 1"),
    ("trainer.amp=fp8", "trainer.amp='fp8' is not known; valid: none, bf16, fp16"),
    ("optim.lr_schedule.name=linear", "optim.lr_schedule.name='linear' is not known; valid: constant"),
    ("optim.lr_schedule.milestones=[5,2]", "must be strictly increasing"),
    ("trainer.staleness=-1", "trainer.staleness=-1 must be an integer >= 0"),
])
def test_bad_values_are_rejected_before_training(override, message, tmp_path):
    cfg = compose("optim=momentum", override, f"results_dir={tmp_path}", "device=cpu")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert message in str(err.value)
    assert not any(tmp_path.iterdir()), "nothing may be written for a rejected config"


def test_the_optimizer_constructor_is_the_config_check(tmp_path):
    """checks.py builds the optimizer: its constructor's ranges and cross-argument rules, nothing else."""
    cfg = compose("optim=nesterov", "optim.momentum=0.0", f"results_dir={tmp_path}", "device=cpu")
    with pytest.raises(ConfigError, match=r"optim.nesterov=True needs momentum > 0 and dampening = 0"):
        run(cfg)
    cfg = compose("optim=adam", "optim.betas=[0.9]", f"results_dir={tmp_path}", "device=cpu")
    with pytest.raises(ConfigError, match=r"optim.betas must have 2 entries, got \(0.9,\)"):
        run(cfg)
    accepted = compose("optim=sgd_hd", "optim.lr=0.0", "task.epochs=1", f"results_dir={tmp_path}", "device=cpu")
    assert (run(accepted) / "summary.json").exists()  # Hypergrad accepts alpha_0 = 0, so the check does too


def test_unknown_optimizer_argument_lists_the_valid_ones(tmp_path):
    cfg = compose("optim=adam", "+optim.momentum=0.9", f"results_dir={tmp_path}", "device=cpu")
    with pytest.raises(ValueError, match="optim.momentum is not an argument of Adam; valid: lr, betas"):
        run(cfg)


@pytest.mark.parametrize("group, name", [("task", "nosuchtask"), ("optim", "nosuchoptim")])
def test_unknown_task_or_optimizer_lists_the_valid_names(group, name, tmp_path):
    proc = run_cli(f"{group}={name}", f"results_dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert "Available options" in proc.stderr and ("digits_mlp" in proc.stderr or "adamw" in proc.stderr)


def test_missing_dataset_names_the_path_and_how_to_get_it(tmp_path):
    cfg = compose("task=mnist_mlp", f"data_dir={tmp_path / 'nothing'}", f"results_dir={tmp_path}", "device=cpu")
    with pytest.raises(DatasetNotFoundError) as err:
        run(cfg)
    assert str(tmp_path / "nothing" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") in str(err.value)
    assert "download=true" in str(err.value)


def test_corrupt_checkpoint_falls_back_then_errors(tmp_path):
    cfg = compose("task.epochs=2", f"results_dir={tmp_path}", "device=cpu", "trainer.keep=all")
    run_dir = run(cfg)
    (run_dir / "summary.json").unlink()  # pretend it was killed
    (run_dir / "checkpoint.pth").write_bytes(b"garbage")
    run(cfg)  # falls back to checkpoint.prev.pth (epoch 1) and finishes
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert [r["epoch"] for r in read_csv(run_dir / "metrics.csv")] == ["0", "1", "2"]
    (run_dir / "summary.json").unlink()
    (run_dir / "checkpoint.pth").write_bytes(b"garbage")
    (run_dir / "checkpoint.prev.pth").write_bytes(b"garbage")
    with pytest.raises(CorruptCheckpointError, match="unreadable.*delete the run directory \\(or pass resume=false\\)"):
        run(cfg)


def test_multirun_sweep_gives_each_run_its_own_directory(tmp_path):
    run_cli("-m", "optim=sgd,adam", "seed=0,1", "task=digits_logreg", "task.epochs=1", "device=cpu",
            f"results_dir={tmp_path}")
    dirs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*/*/seed*/summary.json"))
    assert dirs == [f"digits_logreg/{o}/task.epochs=1/seed{s}" for o in ("adam", "sgd") for s in (0, 1)]


def test_default_command_runs_the_embedded_task_and_prints_its_directory(tmp_path):
    proc = run_cli(f"results_dir={tmp_path}", "task.epochs=1")
    assert f"results in {tmp_path}/digits_mlp/sgd/task.epochs=1/seed0" in proc.stdout


def test_tensorboard_writes_the_same_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = run(compose("task=digits_logreg", "task.epochs=2", "tensorboard=true", "trainer.log_every=5",
                          f"results_dir={tmp_path}", "device=cpu"))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"epoch/val_loss", "epoch/train_loss", "step/loss", "step/lr"} <= tags
    logged = [e.value for e in events.Scalars("epoch/val_loss")]
    assert logged == pytest.approx([float(r["val_loss"]) for r in read_csv(run_dir / "metrics.csv")], rel=1e-6)
