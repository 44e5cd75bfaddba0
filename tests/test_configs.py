"""Every task config composes with every optimizer config, passes the run checks, and builds its optimizer."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR
from optbench.checks import check_run
from optbench.optim import build_optimizer
from optbench.schedules import lr_factor
from optbench.run_config import optimizer_config, schedule_config

TASKS = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))
OPTIMS = sorted(p.stem for p in (CONFIG_DIR / "optim").glob("*.yaml"))


def test_config_names_match_their_files():
    for group, names in (("task", TASKS), ("optim", OPTIMS)):
        for name in names:
            assert OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml")["name"] == name


@pytest.mark.parametrize("task", TASKS)
def test_every_optimizer_composes_with_this_task(task):
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for optim in OPTIMS:
            cfg = OmegaConf.to_container(compose("config", overrides=[f"task={task}", f"optim={optim}"]),
                                         resolve=True)
            assert cfg["task"]["name"] == task and cfg["optim"]["name"] == optim
            check_run(cfg)
            optimizer = build_optimizer(params, optimizer_config(cfg))
            assert isinstance(optimizer, torch.optim.Optimizer)
            schedule, epochs = schedule_config(cfg), cfg["task"]["epochs"]
            for milestone in schedule.get("milestones") or []:
                assert 1 <= milestone < epochs, f"{task}/{optim}: milestone {milestone} never applies in {epochs}"
            factors = [lr_factor(schedule, e, epochs) for e in range(1, epochs + 1)]
            assert factors[0] == 1.0 and all(0 < f <= 1 for f in factors), f"{task}/{optim}: {schedule}"
            assert factors == sorted(factors, reverse=True), f"{task}/{optim}: the schedule must only decay"


def test_schedules():
    step = {"name": "step", "milestones": [150, 250], "lr_decay": 0.1}
    assert [lr_factor(step, e, 400) for e in (1, 150, 151, 250, 251, 400)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor({"name": "exponential", "lr_decay": 0.5}, 3, 10) == 0.25
    cosine = {"name": "cosine"}
    assert lr_factor(cosine, 1, 10) == 1.0 and lr_factor(cosine, 6, 10) == pytest.approx(0.5)
    assert lr_factor({"name": "cosine", "min_factor": 0.1}, 11, 10) == pytest.approx(0.1)


def test_the_wheel_ships_every_config_and_the_command(tmp_path):
    """A non-editable `pip install .` runs from the package alone: every YAML under configs/ is in the wheel,
    next to the `optbench` command."""
    import subprocess
    import sys
    import zipfile

    from conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = tmp_path.glob("optbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.split("optbench/configs/", 1)[1] for n in names if n.startswith("optbench/configs/") and
               n.endswith(".yaml")}
    expected = {str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml")}
    assert expected and shipped == expected
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "optbench = optbench.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.parametrize("overrides", [
    ["task=digits_mlp", "optim=adam", "seed=3", "results_dir=/tmp/x", "trainer.threads=1", "device=cpu"],
    ["task=digits_mlp", "optim=sgd", "trainer.grad_clip=1.0"],
    ["task=digits_mlp", "optim=aggmo", "optim.lr=0.5", "seed=1"],
    ["task=digits_mlp", "optim=adam", "task.epochs=2", "trainer.log_every=5"],
    ["task=digits_mlp", "optim=adam", "+trainer.amp=bf16"],
])
def test_variant_without_composing_the_defaults_equals_the_composed_one(overrides):
    """The shortcut (the run's own config is its default when the command line names no variant) must give the
    variant name that composing the defaults gives."""
    from optbench import rundir
    from optbench.run_config import compose_config, default_run_config

    cfg = compose_config([o.lstrip("+") for o in overrides])
    assert rundir.variant_name(cfg, default_run_config(cfg, overrides)) == \
        rundir.variant_name(cfg, default_run_config(cfg))
