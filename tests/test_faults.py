"""The run store under faults, on digits-sized runs: concurrent copies of a command, near-identical configs,
changed configs on resume, signals, a full disk, damaged files, bad input, divergence, and SIGKILL anywhere.
Each test asserts what a user sees (exit code, stderr, status) and that the run's logs end up equal to a clean
run's."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, compose
from optbench import rundir, runlock
from optbench.errors import ConfigError, RunStoreError
from optbench.train import run

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
QUICK = ["task=digits_mlp", "task.model_kwargs.hidden=[64]", "optim=adam", "task.epochs=3", "device=cpu",
         "trainer.log_every=5", "trainer.keep=all"]  # keep=all: interrupted_copy needs checkpoint.prev.pth
# a few seconds of training on one thread: long enough to be caught mid-run
SLOW = ["task=digits_mlp", "task.model_kwargs.hidden=[1024,1024]", "task.batch_size=16", "optim=adam",
        "task.epochs=4", "device=cpu", "trainer.log_every=5", "trainer.keep=all"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def logs(run_dir: Path) -> tuple[list, list]:
    """metrics.csv (time_s aside) and steps.csv: what must equal a clean run's."""
    metrics = [{k: v for k, v in r.items() if k != "time_s"} for r in read_csv(run_dir / rundir.METRICS)]
    return metrics, read_csv(run_dir / rundir.STEPS)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / rundir.SUMMARY).read_text())


def cli(*args: str, results: Path, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), *args, f"results_dir={results}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout + proc.stderr)
    return proc


def start(*args: str, results: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "main.py"), *args, f"results_dir={results}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for_steps(results: Path, rows: int, timeout: float = 120.0) -> Path:
    """The run directory once its steps.csv has ``rows`` rows (the run is mid-training)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(results.glob(f"{rundir.RUN_GLOB}/{rundir.STEPS}"))
        if found and len(read_csv(found[0])) >= rows:
            return found[0].parent
        time.sleep(0.02)
    raise AssertionError(f"no steps.csv with {rows} rows under {results}")


@pytest.fixture(scope="module")
def clean_quick(tmp_path_factory) -> Path:
    return run(compose(*QUICK, f"results_dir={tmp_path_factory.mktemp('clean_quick')}"))


@pytest.fixture(scope="module")
def clean_slow(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("clean_slow")
    cli(*SLOW, results=results, check=True)
    return next(results.glob(rundir.RUN_GLOB))


def no_temporaries(run_dir: Path) -> bool:
    return not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------- concurrency
def test_two_identical_commands_started_together_leave_one_clean_run(tmp_path, clean_slow):
    for attempt in range(5):
        results = tmp_path / str(attempt)
        procs = [start(*SLOW, results=results) for _ in range(2)]
        outcomes = sorted((p.wait(timeout=300), *p.communicate()) for p in procs)
        (ran, ran_out, _), (locked, _, locked_err) = outcomes
        assert (ran, locked) == (0, 3), outcomes
        assert "results in" in ran_out
        assert "is being run by pid" in locked_err and "Traceback" not in locked_err
        (run_dir,) = results.glob(rundir.RUN_GLOB)
        assert logs(run_dir) == logs(clean_slow) and summary(run_dir)["status"] == "finished"


def test_a_sweep_that_names_the_same_run_twice_runs_it_once(tmp_path, clean_quick):
    proc = cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,0", *QUICK, results=tmp_path,
               check=True)
    out = proc.stdout + proc.stderr
    assert out.count("results in") + out.count("already finished") == 2 or "optbench: skipped:" in out
    (run_dir,) = tmp_path.glob(rundir.RUN_GLOB)
    assert logs(run_dir) == logs(clean_quick)
    assert len(summary(run_dir)["attempts"]) == 1


def test_configs_that_differ_in_the_seventh_digit_get_their_own_runs(tmp_path):
    dirs = [run(compose(*QUICK, "task.epochs=1", f"optim.lr={lr}", f"results_dir={tmp_path}"))
            for lr in ("0.1234561", "0.1234564")]
    assert dirs[0] != dirs[1] and all(summary(d)["status"] == "finished" for d in dirs)
    assert dirs[0].parent.name == "lr=0.1234561,task.epochs=1,task.model_kwargs.hidden=[64]"


# ----------------------------------------------------------------------------------------------- changed configs
def interrupted_copy(clean: Path, where: Path) -> Path:
    """A copy of a finished run set back to its epoch-2 checkpoint, as a run stopped after epoch 2 leaves it."""
    import shutil

    copy = where / clean.relative_to(clean.parents[3])
    shutil.copytree(clean, copy)
    (copy / rundir.PREVIOUS_CHECKPOINT).replace(copy / rundir.CHECKPOINT)
    state = summary(copy)
    state["status"] = "interrupted"
    rundir.write_json(copy / rundir.SUMMARY, state)
    return copy


@pytest.mark.parametrize("override, key", [("trainer.log_every=2", "trainer.log_every"),
                                           ("trainer.eval_train=true", "trainer.eval_train")])
def test_resuming_with_a_setting_that_changes_the_logs_is_refused(override, key, tmp_path, clean_quick):
    copy = interrupted_copy(clean_quick, tmp_path)
    with pytest.raises(ConfigError, match=f"started with {key}=.*resume=false.*branch"):
        run(compose(*QUICK, override, f"results_dir={tmp_path}"))
    assert summary(copy)["status"] == "interrupted"  # untouched


def test_a_hand_edited_config_yaml_is_noticed(tmp_path, clean_quick):
    copy = interrupted_copy(clean_quick, tmp_path)
    text = (copy / rundir.CONFIG).read_text()
    (copy / rundir.CONFIG).write_text(text.replace("lr: 0.001", "lr: 0.002"))
    with pytest.raises(ConfigError, match="config.yaml no longer matches"):
        run(compose(*QUICK, f"results_dir={tmp_path}"))


def test_free_settings_may_change_and_each_attempt_is_recorded(tmp_path, clean_quick):
    copy = interrupted_copy(clean_quick, tmp_path)
    original = (copy / rundir.CONFIG).read_text()
    run(compose(*QUICK, "trainer.progress=false", f"results_dir={tmp_path}"))
    state = summary(copy)
    assert state["status"] == "finished" and logs(copy) == logs(clean_quick)
    changed = state["attempts"][-1]["changed"]  # the copy moved, so results_dir changed too
    assert changed["trainer.progress"] == ["auto", False] and set(changed) == {"trainer.progress", "results_dir"}
    assert state["attempts"][-1]["status"] == "finished" and state["attempts"][-1]["end"] >= state["attempts"][-1][
        "start"]
    assert (copy / rundir.CONFIG).read_text() == original  # the config the run started with


# ----------------------------------------------------------------------------------------------- signals
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signal_stops_after_the_step_saves_and_the_rerun_resumes_exactly(signum, tmp_path, clean_slow):
    proc = start(*SLOW, results=tmp_path)
    run_dir = wait_for_steps(tmp_path, 30)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    state = summary(run_dir)
    assert state["status"] == "interrupted" and signal.Signals(signum).name in state["reason"]
    assert state["owner"] is None and no_temporaries(run_dir)
    checkpoint = torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)
    assert checkpoint["partial"] is not None or checkpoint["epoch"] < 4  # stopped inside an epoch or between
    resumed = cli(*SLOW, results=tmp_path, check=True)
    assert "resuming from epoch" in resumed.stdout
    assert logs(run_dir) == logs(clean_slow)
    assert [a["status"] for a in summary(run_dir)["attempts"]] == ["interrupted", "finished"]


def test_sigkill_anywhere_then_rerun_resumes_and_a_reader_sees_it_interrupted(tmp_path, clean_slow):
    proc = start(*SLOW, results=tmp_path)
    run_dir = wait_for_steps(tmp_path, 45)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert summary(run_dir)["status"] == "running"
    assert runlock.effective_status(run_dir, summary(run_dir)) == "interrupted"  # its process is gone
    from optbench.plot.runs import load_runs

    assert [r.status for r in load_runs(tmp_path)] == ["interrupted"]
    cli(*SLOW, results=tmp_path, check=True)
    assert logs(run_dir) == logs(clean_slow)
    assert [a["status"] for a in summary(run_dir)["attempts"]] == ["interrupted", "finished"]


# ----------------------------------------------------------------------------------------------- I/O faults
def test_a_full_disk_is_one_clear_line_leaves_no_temporaries_and_the_run_resumes(tmp_path, clean_quick, monkeypatch):
    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(bytes(data)[:1000])
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    checkpoints_opened = []

    def open_on_a_disk_that_fills_at_the_third_checkpoint(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if str(path).endswith(rundir.CHECKPOINT + ".tmp"):
            checkpoints_opened.append(path)
            if len(checkpoints_opened) == 3:  # epoch 2's checkpoint: epoch 1's stays the last good one
                return FullDisk(f)
        return f

    monkeypatch.setattr(rundir, "open", open_on_a_disk_that_fills_at_the_third_checkpoint, raising=False)
    with pytest.raises(RunStoreError) as err:
        run(compose(*QUICK, f"results_dir={tmp_path}"))
    message = str(err.value)
    (run_dir,) = tmp_path.glob(rundir.RUN_GLOB)
    assert len(message.splitlines()) == 1
    assert f"cannot write {run_dir / rundir.CHECKPOINT}: No space left on device" in message
    assert no_temporaries(run_dir) and summary(run_dir)["status"] == "failed"
    monkeypatch.undo()
    run(compose(*QUICK, f"results_dir={tmp_path}"))
    assert logs(run_dir) == logs(clean_quick) and summary(run_dir)["status"] == "finished"


@pytest.mark.parametrize("damage", [b"\x8f\x00garbage\xff", b"[1, 2]"])
def test_an_unreadable_summary_is_rebuilt(damage, tmp_path, clean_quick):
    copy = interrupted_copy(clean_quick, tmp_path)
    (copy / rundir.SUMMARY).write_bytes(damage)
    run(compose(*QUICK, f"results_dir={tmp_path}"))
    assert summary(copy)["status"] == "finished" and logs(copy) == logs(clean_quick)


def test_a_partial_last_csv_line_is_dropped_with_a_warning(tmp_path, clean_quick):
    copy = interrupted_copy(clean_quick, tmp_path)
    rows = read_csv(copy / rundir.METRICS)
    with open(copy / rundir.METRICS, "a") as f:
        f.write("1")  # a line cut off by a kill
    with pytest.warns(RuntimeWarning, match="skipped 1 incomplete"):
        run(compose(*QUICK, f"results_dir={tmp_path}"))
    assert logs(copy) == logs(clean_quick) and len(rows) == 4


def test_a_deleted_metrics_csv_with_a_checkpoint_is_an_error_naming_the_fix(tmp_path, clean_quick):
    copy = interrupted_copy(clean_quick, tmp_path)
    (copy / rundir.METRICS).unlink()
    proc = cli(*QUICK, results=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "metrics.csv is missing or empty but checkpoint.pth is at epoch 2" in proc.stderr
    assert "resume=false" in proc.stderr


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "optim.lr must be a finite number >= 0, got -1"),
    ("seed=abc", "seed='abc' must be an integer >= 0"),
    ("optim.betas=[0.9]", "optim.betas must have 2 entries, got (0.9,)"),
])
def test_config_errors_are_one_line_exit_2_and_write_nothing(override, message, tmp_path):
    proc = cli(*QUICK, override, results=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == f"optbench: error: {message}"
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_missing_dataset_leaves_no_directory(tmp_path):
    proc = cli("task=mnist_mlp", "device=cpu", f"data_dir={tmp_path / 'nothing'}", results=tmp_path / "results")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "MNIST not found" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_junk_gz_file_is_named(tmp_path, mini_data_dir):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(mini_data_dir, data)
    junk = data / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    junk.write_bytes(b"this is not gzip")
    proc = cli("task=mnist_mlp", "device=cpu", f"data_dir={data}", results=tmp_path / "results")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{junk} cannot be read (BadGzipFile" in proc.stderr and "fetch it again" in proc.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_diverged_run_has_a_strict_json_summary_with_the_reason(tmp_path):
    run_dir = run(compose("optim=sgd", "optim.lr=1e12", "task.epochs=3", "device=cpu", "trainer.log_every=1",
                          f"results_dir={tmp_path}"))

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    state = json.loads((run_dir / rundir.SUMMARY).read_text(), parse_constant=reject)
    assert state["status"] == "diverged" and "non-finite" in state["reason"]
    assert state["final"]["train_loss"] is None  # NaN becomes null
