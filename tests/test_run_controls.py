"""Run controls (README: Run controls) on problems with known answers: stop_at, task.max_steps, step-unit
schedules and warmup, reduce-on-plateau, early stopping, NT-ASGD; and each of them resuming exactly after a
stop inside an epoch and after a kill.

Most runs use the noisy quadratic as f(x) = x^2 / 2 from x0 = 1 without noise (dim 1, h = 1): the gradient is
x, so after k SGD steps at lr the iterate is (1 - lr)^k and every loss is known in closed form."""

from __future__ import annotations

import csv
import json
import math
import shutil
import signal
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from optbench import results, rundir, summary
from optbench.checks import check_run
from optbench.controls import Averaging, parse_target
from optbench.errors import ConfigError, RunInterrupted
from optbench.train import run

QUADRATIC = ["task=noisy_quadratic", "task.dim=1", "task.h_min=1.0", "task.h_max=1.0", "task.noise=0.0",
             "task.init_scale=1.0", "task.steps_per_epoch=8", "optim=sgd", "device=cpu", "trainer.log_every=1"]
DIGITS = ["task=digits_logreg", "optim=sgd", "optim.lr=0.1", "device=cpu"]


def quadratic(*extra: str, lr: float = 0.1, epochs: int = 10) -> list[str]:
    return [*QUADRATIC, f"optim.lr={lr}", f"task.epochs={epochs}", *extra]


def go(args: list[str], results_dir: Path) -> Path:
    return run(compose(*args, f"results_dir={results_dir}"))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(run_dir: Path, name: str, log: str = rundir.METRICS) -> list[float]:
    return [float(r[name]) for r in read_csv(run_dir / log)]


def logs(run_dir: Path) -> tuple[list, list]:
    """metrics.csv (time_s aside) and steps.csv: what a resumed run must reproduce."""
    metrics = [{k: v for k, v in r.items() if k != "time_s"} for r in read_csv(run_dir / rundir.METRICS)]
    return metrics, read_csv(run_dir / rundir.STEPS)


def state(run_dir: Path) -> dict:
    return json.loads((run_dir / rundir.SUMMARY).read_text())


# ----------------------------------------------------------------------------------------------- stop_at
def test_stop_at_a_loss_ends_at_the_step_the_closed_form_gives(tmp_path, capsys):
    """The loss logged at step s is that of the iterate before it, (1 - lr)^(s-1): with lr 0.1 it is
    0.5 * 0.81^(s-1), first below 0.01 at s = 20 (mid epoch 3); the epoch is then closed with a row."""
    expected = next(s for s in range(1, 100) if 0.5 * 0.81 ** (s - 1) < 0.01)
    assert expected == 20
    args = quadratic("trainer.stop_at='loss<0.01'")
    run_dir = go(args, tmp_path)
    summary_ = state(run_dir)
    assert summary_["status"] == "reached" and summary_["stop_reason"] == "stop_at"
    assert summary_["stop_at"] == "loss<0.01" and summary_["reached_at"]["step"] == expected
    assert summary_["reached_at"]["loss"] == pytest.approx(0.5 * 0.81 ** (expected - 1), rel=1e-5)
    assert column(run_dir, "step", rundir.STEPS)[-1] == expected
    rows = read_csv(run_dir / rundir.METRICS)
    assert [(r["epoch"], r["step"]) for r in rows] == [("0", "0"), ("1", "8"), ("2", "16"), ("3", "20")]
    assert float(rows[-1]["val_loss"]) == pytest.approx(0.5 * 0.81 ** expected, rel=1e-5)  # evaluated at the end
    assert torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)["step"] == expected
    assert (run_dir / rundir.BEST).exists()
    capsys.readouterr()
    assert go(args, tmp_path) == run_dir  # reached is settled: the command does not redo it
    assert "already reached" in capsys.readouterr().out


def test_stop_at_an_epoch_metric_ends_at_the_first_epoch_past_it(tmp_path):
    full = go([*DIGITS, "task.epochs=4"], tmp_path / "full")
    losses = column(full, "val_loss")
    assert losses[2] < min(losses[:2])
    target = (losses[2] + min(losses[:2])) / 2  # first passed at epoch 2
    stopped = go([*DIGITS, "task.epochs=4", f"trainer.stop_at='val_loss<{target!r}'"], tmp_path / "stopped")
    assert logs(stopped)[0] == logs(full)[0][:3]
    assert state(stopped)["status"] == "reached" and state(stopped)["reached_at"]["epoch"] == 2
    at_start = go([*DIGITS, "task.epochs=4", "trainer.stop_at='val_acc>=0.0'"], tmp_path / "at_start")
    assert column(at_start, "epoch") == [0] and state(at_start)["status"] == "reached"  # epoch 0 counts


@pytest.mark.parametrize("target, message", [
    ("loss=0.3", "unknown operator '='; use <, <=, > or >="),
    ("loss<<0.3", "unknown operator '<<'"),
    ("loss<abc", "the value 'abc' is not a finite number"),
    ("loss<nan", "the value 'nan' is not a finite number"),
    ("loss", "has no comparison"),
    ("<0.3", "is not a target METRIC<VALUE or METRIC>VALUE"),
    ("val_bleu>3", "'val_bleu' is not a metrics.csv column of this task; valid: train_loss, train_acc"),
    ("mu<0.5", "'mu' is not a steps.csv column of this run \\(those are loss, lr\\)"),
])
def test_bad_targets_name_the_problem_and_the_fix(target, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        go([*DIGITS, "task.epochs=1", f"trainer.stop_at='{target}'"], tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_targets_parse():
    assert parse_target("val_acc >= 0.97") == parse_target("val_acc>=0.97")
    target = parse_target("loss<-1e-3")
    assert (target.column, target.op, target.value, target.per_epoch) == ("loss", "<", -1e-3, False)
    assert parse_target("test_ppl<80").per_epoch and str(parse_target("train_loss>2")) == "train_loss>2"


# ----------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("override, message", [
    ("task.max_steps=0", "task.max_steps=0 must be an integer >= 1"),
    ("trainer.patience=-1", "trainer.patience=-1 must be an integer >= 0"),
    ("trainer.nt_asgd=0", "trainer.nt_asgd=0 must be an integer >= 1"),
    ("optim.lr_schedule.unit=hour", "optim.lr_schedule.unit='hour' is not known; valid: epoch, step"),
    ("optim.lr_schedule.warmup_steps=-5", "optim.lr_schedule.warmup_steps=-5 must be an integer >= 0"),
    ("optim.lr_schedule.name=plateau optim.lr_schedule.factor=1.5", "lr_schedule.factor=1.5 is out of range"),
    ("optim.lr_schedule.name=plateau optim.lr_schedule.metric=loss", "metric='loss' must be a metrics.csv column"),
    ("optim.lr_schedule.name=plateau optim.lr_schedule.metric=val_bleu",
     "'val_bleu' is not a metrics.csv column of this task"),
    ("optim.lr_schedule.factor=0.25", "factor=0.25 has no effect: the schedule is 'constant'.*plateau"),
    ("optim.lr_schedule.unit=step", "unit='step' has no effect: the schedule is 'constant'"),
])
def test_bad_control_settings_are_rejected_before_training(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        go([*DIGITS, "task.epochs=1", *override.split()], tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_awd_lstm_preset_uses_nt_asgd():
    cfg = OmegaConf.to_container(compose("experiment=aggmo/ptb_awd", "optim=aggmo"), resolve=True)
    assert cfg["task"]["name"] == "ptb_awd" and cfg["trainer"]["nt_asgd"] == 5
    check_run(cfg)


# ----------------------------------------------------------------------------------------------- max_steps
def test_max_steps_ends_after_exactly_that_many_steps(tmp_path):
    run_dir = go(quadratic("task.max_steps=20", epochs=1), tmp_path)  # max_steps replaces task.epochs
    rows = read_csv(run_dir / rundir.METRICS)
    assert [(r["epoch"], r["step"]) for r in rows] == [("0", "0"), ("1", "8"), ("2", "16"), ("3", "20")]
    assert column(run_dir, "step", rundir.STEPS) == list(range(1, 21))
    assert float(rows[-1]["val_loss"]) == pytest.approx(0.5 * 0.9 ** 40, rel=1e-5)
    assert state(run_dir)["status"] == "finished" and "stop_reason" not in state(run_dir)


# ----------------------------------------------------------------------------------------------- schedules
def lr_step(s: int) -> float:
    """Step decay x0.5 after steps 6 and 13, warmed up over 4 steps (s = 1, 2, ... the step number)."""
    return 0.1 * 0.5 ** sum(m <= s - 1 for m in (6, 13)) * min(1.0, s / 4)


def lr_cosine(s: int) -> float:
    return 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 20)))


@pytest.mark.parametrize("schedule, formula", [
    (["optim.lr_schedule.name=step", "optim.lr_schedule.milestones=[6,13]", "optim.lr_schedule.lr_decay=0.5",
      "optim.lr_schedule.warmup_steps=4"], lr_step),
    (["optim.lr_schedule.name=cosine", "optim.lr_schedule.min_factor=0.1"], lr_cosine),
])
def test_step_unit_schedules_follow_their_formulas_step_by_step(schedule, formula, tmp_path):
    run_dir = go(quadratic("task.max_steps=20", "optim.lr_schedule.unit=step", *schedule), tmp_path)
    expected = [formula(s) for s in range(1, 21)]
    assert column(run_dir, "lr", rundir.STEPS) == pytest.approx(expected, rel=1e-12)
    x = math.prod(1 - lr for lr in expected)  # the iterate after the 20 steps
    assert column(run_dir, "val_loss")[-1] == pytest.approx(0.5 * x * x, rel=1e-5)


def test_warmup_multiplies_an_epoch_schedule_step_by_step(tmp_path):
    run_dir = go(quadratic("optim.lr_schedule.name=step", "optim.lr_schedule.milestones=[1]",
                           "optim.lr_schedule.lr_decay=0.5", "optim.lr_schedule.warmup_steps=12", epochs=3), tmp_path)
    expected = [0.1 * (0.5 if s > 8 else 1.0) * min(1.0, s / 12) for s in range(1, 25)]
    assert column(run_dir, "lr", rundir.STEPS) == pytest.approx(expected, rel=1e-12)
    assert column(run_dir, "lr")[1:] == pytest.approx([sum(expected[i:i + 8]) / 8 for i in (0, 8, 16)])


def test_schedules_scale_an_optimizer_that_tunes_its_own_lr(tmp_path):
    """YellowFin tunes its lr; a warmup scales it through lr_factor instead of overwriting it."""
    run_dir = go(quadratic("optim=yellowfin", "task.max_steps=10", "optim.lr_schedule.warmup_steps=40"), tmp_path)
    group = torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)["optimizer"]["param_groups"][0]
    assert group["lr_factor"] == pytest.approx(10 / 40) and group["initial_lr_factor"] == 1.0


def torch_plateau_lrs(lr: float, val_losses: list[float], **settings) -> list[float]:
    """The lr torch's ReduceLROnPlateau gives each epoch, stepped on the validation loss of the epoch before."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **settings)
    lrs = [lr]
    for value in val_losses[1:-1]:  # epochs 1 .. n-1 decide the lr of epochs 2 .. n
        scheduler.step(value)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_plateau_divides_the_lr_by_four_when_validation_stalls(tmp_path):
    """lr 2 makes x flip sign every step: the loss stays 0.5, so after epoch 2 (no better than epoch 1) the
    factor becomes 0.25, x then halves every step and the loss improves again (YellowFin's PyTorch decay)."""
    run_dir = go(quadratic("optim.lr_schedule.name=plateau", "optim.lr_schedule.factor=0.25",
                           "optim.lr_schedule.patience=0", "optim.lr_schedule.threshold=0.0", lr=2.0, epochs=4),
                 tmp_path)
    lrs = column(run_dir, "lr")
    assert lrs == [2.0, 2.0, 2.0, 0.5, 0.5]
    assert lrs[1:] == torch_plateau_lrs(2.0, column(run_dir, "val_loss"), factor=0.25, patience=0, threshold=0.0)
    plateau = torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)["schedule"]["plateau"]
    assert plateau == {"best": column(run_dir, "val_loss")[-1], "bad_epochs": 0, "factor": 0.25}


def test_plateau_matches_torch_reduce_lr_on_plateau_on_digits(tmp_path):
    settings = dict(factor=0.5, patience=1, threshold=0.05)
    run_dir = go([*DIGITS, "optim.lr=0.5", "task.epochs=8", "optim.lr_schedule.name=plateau"]
                 + [f"optim.lr_schedule.{k}={v}" for k, v in settings.items()], tmp_path)
    lrs = column(run_dir, "lr")
    assert lrs[1:] == pytest.approx(torch_plateau_lrs(0.5, column(run_dir, "val_loss"), **settings), rel=1e-12)
    assert lrs[-1] < 0.5  # it did reduce


# ----------------------------------------------------------------------------------------------- patience
def test_patience_stops_after_more_than_n_epochs_without_improvement(tmp_path, capsys):
    """At lr 2 the validation loss never beats epoch 0's: patience 2 ends the run after epoch 3."""
    args = quadratic("trainer.patience=2", lr=2.0)
    run_dir = go(args, tmp_path)
    assert column(run_dir, "epoch") == [0, 1, 2, 3]
    summary_ = state(run_dir)
    assert summary_["status"] == "finished" and summary_["stop_reason"] == "patience"
    assert (summary_["patience"], summary_["best_epoch"], summary_["epoch"]) == (2, 0, 3)
    capsys.readouterr()
    go(args, tmp_path)
    assert "already finished" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- NT-ASGD
def test_nt_asgd_switches_by_awd_lstms_non_monotone_rule():
    averaging = Averaging(2, torch.nn.Linear(1, 1))
    for epoch, value in enumerate([5, 4, 3, 3.5, 3.2, 2.9, 3.05, 9], start=1):
        averaging.observe(value, epoch, step=10 * epoch)
    # epoch 7: 3.05 > 3, the best of the history without its last 2 entries (5, 4, 3, 3.5); epoch 6's 2.9 is
    # not worse than 3, epoch 5's 3.2 not worse than 4, and before epoch 4 the history is too short
    assert averaging.since == {"epoch": 7, "step": 70} and averaging.history == [5, 4, 3, 3.5, 3.2, 2.9, 3.05]


def test_nt_asgd_averages_as_torch_asgd_does_after_the_switch():
    """AWD-LSTM switches to torch.optim.ASGD(t0=0, lambd=0): plain SGD plus the running mean ``ax`` of the
    iterates from the second step on. SGD with the averaging here gives the same weights and average."""
    torch.manual_seed(0)
    model, inputs, targets = torch.nn.Linear(3, 2), torch.randn(6, 4, 3), torch.randn(6, 4, 2)
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-2)
    asgd = torch.optim.ASGD(twin.parameters(), lr=0.1, t0=0, lambd=0.0, weight_decay=1e-2)
    averaging = Averaging(1, model)
    for epoch, value in enumerate([1.0, 0.5, 2.0], start=1):  # epoch 3 is worse than epoch 1: averaging starts
        averaging.observe(value, epoch, 0)
    assert averaging.since == {"epoch": 3, "step": 0}
    for x, y in zip(inputs, targets):
        for net, optimizer in ((model, sgd), (twin, asgd)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            optimizer.step()
        averaging.after_step()
    for p, q, averaged in zip(model.parameters(), twin.parameters(), averaging.average.parameters()):
        torch.testing.assert_close(p, q)
        torch.testing.assert_close(averaged, asgd.state[q]["ax"])
    with averaging.weights():  # evaluation sees the average, training resumes from the trained weights
        torch.testing.assert_close(model.weight, asgd.state[twin.weight]["ax"])
    torch.testing.assert_close(model.weight, twin.weight, rtol=0, atol=0)


NOISY = ["task.noise=0.3", "task.steps_per_epoch=4", "optim.lr=0.2", "task.epochs=12", "trainer.nt_asgd=2"]


def test_nt_asgd_in_a_run_switches_then_evaluates_the_average(tmp_path):
    run_dir = go([*QUADRATIC, *NOISY], tmp_path)
    val = column(run_dir, "val_loss")
    switch = next(e for e in range(1, len(val)) if e - 1 > 2 and val[e] > min(val[1:e - 2]))  # AWD-LSTM's rule
    assert 1 < switch < 12 and state(run_dir)["nt_asgd_since"] == {"epoch": switch, "step": 4 * switch}
    checkpoint = torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)
    average = checkpoint["controls"]["averaging"]["average"]
    assert int(average["n_averaged"]) == 4 * (12 - switch) - 1  # every step after the switch but the first
    x_avg, x = float(average["module.x"]), float(checkpoint["model"]["x"])
    assert val[-1] == pytest.approx(0.5 * x_avg ** 2, rel=1e-5) and x_avg != x  # evaluated at the average


def test_nt_asgd_on_the_awd_lstm_preset_resumes_exactly(tmp_path, mini_text_dir, monkeypatch):
    """The preset's model, shrunk, on the miniature PTB: averaging starts (here after epoch 4) and a stop in the
    averaged epoch 5 (variable BPTT windows, LSTM state carried) resumes to the same logs."""
    args = ["experiment=aggmo/ptb_awd", "optim=sgd", "optim.lr=5", "task.epochs=5", "task.batch_size=4",
            "task.bptt=5", "task.model_kwargs.embed_dim=8", "task.model_kwargs.hidden=12", "trainer.nt_asgd=1",
            f"data_dir={mini_text_dir}", "device=cpu"]
    whole = go(args, tmp_path / "whole")
    assert state(whole)["nt_asgd_since"]["epoch"] == 4
    with monkeypatch.context() as patch:
        patch.setattr("optbench.train.GracefulStop", lambda: StopAfter(state(whole)["step"] - 3 + 4))
        with pytest.raises(RunInterrupted):
            go(args, tmp_path / "resumed")
    resumed = tmp_path / "resumed" / whole.relative_to(tmp_path / "whole")
    checkpoint = torch.load(resumed / rundir.CHECKPOINT, weights_only=True)
    assert checkpoint["epoch"] == 4 and checkpoint["partial"] is not None
    assert int(checkpoint["controls"]["averaging"]["average"]["n_averaged"]) > 0
    go(args, tmp_path / "resumed")
    assert logs(resumed) == logs(whole)


# ----------------------------------------------------------------------------------------------- status
def test_a_reached_run_gives_final_values_like_a_finished_one(tmp_path):
    go(quadratic(epochs=3), tmp_path)
    go(quadratic("trainer.stop_at='loss<0.01'"), tmp_path)
    table = summary.summarize(results.load(tmp_path))
    assert sorted(table["status"]) == ["1 finished", "1 reached"]
    assert "—" not in set(table["final val_loss"])


# ----------------------------------------------------------------------------------------------- resume
class StopAfter:
    """A GracefulStop whose signal (SIGTERM) arrives at the ``calls``-th check: the trainer checks after every
    step and at every epoch end, so the run stops as a signal there would stop it."""

    def __init__(self, calls: int) -> None:
        self.calls, self.signum = calls, None

    def __enter__(self) -> "StopAfter":
        return self

    def __exit__(self, *exc) -> None:
        pass

    @property
    def requested(self) -> bool:
        self.calls -= 1
        if self.calls <= 0:
            self.signum = signal.SIGTERM
        return self.signum is not None

    def pass_on(self) -> None:
        pass


CONTROLS = {  # each control, and a check count that stops it inside an epoch where its state matters
    "stop_at": (quadratic("trainer.stop_at='loss<0.01'"), 21),  # step 19, one before the target
    "max_steps": (quadratic("task.max_steps=20", epochs=1), 20),
    "warmup_steps": (quadratic("task.max_steps=20", "optim.lr_schedule.unit=step", "optim.lr_schedule.name=cosine",
                               "optim.lr_schedule.warmup_steps=12"), 14),
    "plateau": (quadratic("optim.lr_schedule.name=plateau", "optim.lr_schedule.factor=0.25",
                          "optim.lr_schedule.patience=0", "optim.lr_schedule.threshold=0.0", lr=2.0, epochs=4), 31),
    "patience": (quadratic("trainer.patience=2", lr=2.0), 21),
    "nt_asgd": ([*QUADRATIC, *NOISY], 48),  # epoch 10, after the switch
}


@pytest.mark.parametrize("name", list(CONTROLS))
def test_each_control_resumes_exactly_after_a_stop_inside_an_epoch(name, tmp_path, monkeypatch):
    args, calls = CONTROLS[name]
    whole = go(args, tmp_path / "whole")
    with monkeypatch.context() as patch:
        patch.setattr("optbench.train.GracefulStop", lambda: StopAfter(calls))
        with pytest.raises(RunInterrupted):
            go(args, tmp_path / "resumed")
    resumed = tmp_path / "resumed" / whole.relative_to(tmp_path / "whole")
    assert torch.load(resumed / rundir.CHECKPOINT, weights_only=True)["partial"] is not None  # inside an epoch
    assert state(resumed)["status"] == "interrupted"
    assert go(args, tmp_path / "resumed") == resumed
    assert logs(resumed) == logs(whole)
    assert state(resumed)["status"] == state(whole)["status"]
    assert {k: v for k, v in state(resumed).items() if k.startswith(("stop", "reached", "nt_asgd", "best_epoch"))} \
        == {k: v for k, v in state(whole).items() if k.startswith(("stop", "reached", "nt_asgd", "best_epoch"))}


@pytest.mark.parametrize("name", list(CONTROLS))
def test_each_control_resumes_exactly_after_a_kill(name, tmp_path):
    """SIGKILL after the last-but-one checkpoint: the directory holds that checkpoint and a summary still saying
    running; the same command resumes from there and writes the same logs."""
    args = [*CONTROLS[name][0], "trainer.keep=all"]
    whole = go(args, tmp_path / "whole")
    killed = tmp_path / "killed" / whole.relative_to(tmp_path / "whole")
    shutil.copytree(whole, killed)
    (killed / rundir.PREVIOUS_CHECKPOINT).replace(killed / rundir.CHECKPOINT)
    rundir.write_json(killed / rundir.SUMMARY, {**state(whole), "status": "running"})
    assert go(args, tmp_path / "killed") == killed
    assert logs(killed) == logs(whole) and state(killed)["status"] == state(whole)["status"]


@pytest.mark.parametrize("name", ["stop_at", "patience"])
def test_a_run_killed_after_deciding_to_stop_does_not_train_on(name, tmp_path, capsys):
    """Killed after its last checkpoint but before summary.json said so: the decision is in the checkpoint."""
    args = CONTROLS[name][0]
    whole = go(args, tmp_path / "whole")
    killed = tmp_path / "killed" / whole.relative_to(tmp_path / "whole")
    shutil.copytree(whole, killed)
    rundir.write_json(killed / rundir.SUMMARY, {**state(whole), "status": "running"})
    capsys.readouterr()
    go(args, tmp_path / "killed")
    assert "resuming from epoch" in capsys.readouterr().out
    assert logs(killed) == logs(whole) and state(killed)["status"] == state(whole)["status"]
    assert state(killed)["stop_reason"] == state(whole)["stop_reason"]
