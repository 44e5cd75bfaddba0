"""Scale-out: torchrun data parallelism (gloo on CPU) follows the single-process math; Hydra's joblib and
submitit launchers run sweeps; a killed DDP run resumes."""

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

from conftest import CONFIG_DIR, REPO

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# one optimizer per family whose statistics are global or per-tensor; those not yet in configs/optim are skipped
FAMILIES = ["momentum", "adam", "aggmo", "expectigrad", "adamp", "sgdp", "sgd_hd", "adam_hd",
            "sgdop_adamlop", "yellowfin"]
TINY = ["task=digits_mlp", "task.epochs=2", "task.model_kwargs.hidden=[32]", "device=cpu"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main_py(*args: str, nproc: int = 1, results: Path, check: bool = True) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                "--standalone"] if nproc > 1 else [sys.executable]
    proc = subprocess.run([*launcher, str(REPO / "main.py"), *args, f"results_dir={results}"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process whose command line contains text, as a node failure would."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="ignore"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def assert_same_run(one: Path, two: Path, rtol: float = 1e-4) -> None:
    rows1, rows2 = read_csv(one / "metrics.csv"), read_csv(two / "metrics.csv")
    assert len(rows1) == len(rows2) == 3
    for r1, r2 in zip(rows1, rows2):
        for key in r1:
            if key != "time_s" and r1[key]:
                assert float(r2[key]) == pytest.approx(float(r1[key]), rel=rtol, abs=1e-6), key
    p1 = torch.load(one / "checkpoint.pth", weights_only=True)["model"]
    p2 = torch.load(two / "checkpoint.pth", weights_only=True)["model"]
    for name in p1:
        torch.testing.assert_close(p2[name], p1[name], rtol=rtol, atol=1e-5)


@pytest.fixture(scope="module")
def families():
    return [f for f in FAMILIES if (CONFIG_DIR / "optim" / f"{f}.yaml").exists()]


@pytest.fixture(scope="module")
def single_and_ddp(tmp_path_factory, families):
    root = tmp_path_factory.mktemp("ddp")
    sweep = ["-m", f"optim={','.join(families)}", *TINY]
    main_py(*sweep, results=root / "one")
    two = main_py(*sweep, nproc=2, results=root / "two")
    assert "(2 processes)" in two.stdout
    return root


def test_two_process_ddp_equals_single_process_for_every_optimizer_family(single_and_ddp, families):
    assert len(families) >= 2
    for optim in families:
        one = next((single_and_ddp / "one" / "digits_mlp" / optim).glob("*/seed0"))
        two = single_and_ddp / "two" / one.relative_to(single_and_ddp / "one")
        assert_same_run(one, two)


def test_only_rank_zero_writes_and_directory_matches_single_process(single_and_ddp):
    one = sorted(p.relative_to(single_and_ddp / "one") for p in (single_and_ddp / "one").glob("*/*/*/seed0"))
    two = sorted(p.relative_to(single_and_ddp / "two") for p in (single_and_ddp / "two").glob("*/*/*/seed0"))
    assert one == two
    steps = read_csv(next((single_and_ddp / "two").glob("*/momentum/*/seed0")) / "steps.csv")
    assert len(steps) == len({r["step"] for r in steps}), "one row per step: a single writer"


def test_killed_ddp_run_resumes(tmp_path, single_and_ddp):
    args = ["optim=momentum", "task=digits_mlp", "task.epochs=6", "task.batch_size=16",
            "task.model_kwargs.hidden=[512,512]", "device=cpu", f"results_dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                             str(REPO / "main.py"), *args], cwd=REPO, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, run_dir = time.time() + 300, None
    while time.time() < deadline:
        found = list(tmp_path.glob("*/*/*/seed0/metrics.csv"))
        if found and len(read_csv(found[0])) >= 3:
            run_dir = found[0].parent
            break
        time.sleep(0.05)
    kill_processes_mentioning(str(tmp_path))  # the launcher and its workers (torchrun gives them own sessions)
    proc.wait()
    assert run_dir is not None
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    done_before = len(read_csv(run_dir / "metrics.csv")) - 1
    assert done_before < 6
    resumed = main_py(*args[:-1], nproc=2, results=tmp_path)
    assert "resuming from epoch" in resumed.stdout
    assert [int(r["epoch"]) for r in read_csv(run_dir / "metrics.csv")] == list(range(7))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_joblib_sweep_of_four_runs_with_two_jobs(tmp_path):
    main_py("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optim=sgd,adam", "seed=0,1",
            "task=digits_logreg", "task.epochs=1", "device=cpu", results=tmp_path)
    summaries = list(tmp_path.glob("digits_logreg/*/*/seed*/summary.json"))
    assert len(summaries) == 4
    assert all(json.loads(p.read_text())["status"] == "finished" for p in summaries)


def test_submitit_local_sweep_of_two_runs(tmp_path):
    main_py("-m", "hydra/launcher=submitit_local", "optim=sgd,adam", "task=digits_logreg", "task.epochs=1",
            "device=cpu", results=tmp_path)
    summaries = list(tmp_path.glob("digits_logreg/*/*/seed0/summary.json"))
    assert len(summaries) == 2
    assert all(json.loads(p.read_text())["status"] == "finished" for p in summaries)


def test_slurm_launcher_config_requeues_and_keeps_its_files_in_the_sweep(tmp_path):
    """What the README promises of configs/hydra/launcher/slurm.yaml: a timed-out or pre-empted job is
    re-queued (max_num_timeout), gets a warning signal before the kill, and submitit's files go into the sweep's
    own directory under results_dir; cluster settings stay overridable."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", f"results_dir={tmp_path}",
                                           "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.max_num_timeout >= 1 and launcher.signal_delay_s > 0
    sweep_dir = Path(cfg.hydra.sweep.dir)
    assert sweep_dir.parent == tmp_path / ".hydra"
    assert Path(launcher.submitit_folder).parent == sweep_dir / ".submitit"


def test_language_model_train_ppl_under_ddp_is_that_of_the_global_batch(tmp_path, mini_text_dir):
    """Each process sees its rows of every BPTT window; train_ppl adds the cross-entropy over processes."""
    args = ["task=tinyshakespeare_char", "optim=sgd", "task.epochs=2", "task.batch_size=4",
            "task.model_kwargs.embed_dim=8", "task.model_kwargs.hidden=16", f"data_dir={mini_text_dir}", "device=cpu"]
    main_py(*args, results=tmp_path / "one")
    main_py(*args, nproc=2, results=tmp_path / "two")
    one = next((tmp_path / "one").glob("tinyshakespeare_char/sgd/*/seed0"))
    two = tmp_path / "two" / one.relative_to(tmp_path / "one")
    assert read_csv(one / "metrics.csv")[-1]["train_ppl"]  # logged from the training epochs, not an evaluation
    assert_same_run(one, two)
