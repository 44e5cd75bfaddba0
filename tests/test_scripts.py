"""The paper sweep scripts end to end: `QUICK=1 bash scripts/hypergrad.sh` runs the whole miniature grid
through Hydra multirun, then draws the figures and the table from the run directories (about a minute or two
on 2 CPU cores)."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess

import pytest
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, REPO, markdown_rows
from test_plot_rundirs import classification_rows, step_rows, write_run

PAPERS = ("aggmo", "expectigrad", "hypergrad", "adamp", "yellowfin")


@pytest.mark.parametrize("script", [f"{p}.sh" for p in PAPERS] + ["plots.sh"])
def test_scripts_are_valid_bash_and_pass_arguments_to_hydra(script):
    path = REPO / "scripts" / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    assert "set -euo pipefail" in text
    if script != "plots.sh":  # their own arguments reach every sweep, through the shared sweep()
        assert 'EXTRA=("$@")' in text and "source scripts/_sweep.sh" in text and "QUICK" in text
        assert '"${EXTRA[@]}"' in (REPO / "scripts" / "_sweep.sh").read_text()


def _captured_commands(tmp_path, script: str, quick: bool) -> list[list[str]]:
    """The python command lines a script runs, captured by a stand-in `python` on PATH (nothing is trained)."""
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text('#!/usr/bin/env bash\nprintf "%s\\x1f" "$@" >> "$CAPTURE"; printf "\\n" >> "$CAPTURE"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    capture = tmp_path / f"{script}-{quick}.txt"
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "CAPTURE": str(capture),
           "QUICK": "1" if quick else "0"}
    proc = subprocess.run(["bash", f"scripts/{script}.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [line.split("\x1f")[:-1] for line in capture.read_text().splitlines()]


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize("paper", PAPERS)
def test_every_job_of_the_grid_composes(tmp_path, paper, quick):
    """Each sweep composes the way Hydra's multirun does it: first the primary config with the non-sweep
    overrides only (a sweep over optim leaves the default optim there, so optimizer-specific keys need ++),
    then one job per choice of the swept config groups; each job passes the run checks. This checks the full
    grids, which CI cannot afford to run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from optbench import tuning
    from optbench.checks import check_run

    commands = _captured_commands(tmp_path, paper, quick)
    sweeps = [c[2:] for c in commands if c[:2] == ["main.py", "-m"]]
    plots = [c for c in commands if c[:2] == ["-m", "optbench.plot"]]
    assert sweeps and len(plots) == 1 and plots[0][-2:] == [f"results_dir=results/{paper}", "plots_dir=plots"]
    parser = OverridesParser.create()
    jobs = 0
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for overrides in sweeps:
            parsed = parser.parse_overrides(overrides)
            fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
            compose("config", overrides=fixed)
            groups = [o for o in parsed if o.is_sweep_override() and o.key_or_group in ("task", "optim", "experiment")]
            firsts = [f"{o.input_line.split('=')[0]}={next(o.sweep_string_iterator())}" for o in parsed
                      if o.is_sweep_override() and o not in groups]
            for choice in itertools.product(*(list(o.sweep_string_iterator()) for o in groups)):
                picked = [f"{o.key_or_group}={value}" for o, value in zip(groups, choice)]
                cfg = OmegaConf.to_container(compose("config", overrides=fixed + picked + firsts), resolve=True)
                for point in range(len(tuning.grid(cfg))) if cfg.get("tune") else [None]:  # each tuning point
                    check_run(tuning.apply({**cfg, "tune": {**cfg["tune"], "point": point}}) if cfg.get("tune")
                              else cfg)
                    jobs += 1
    assert jobs >= 3


def test_quick_hypergrad_runs_the_grid_and_draws_everything(tmp_path):
    env = {**os.environ, "QUICK": "1", "RESULTS": str(tmp_path / "results"), "PLOTS": str(tmp_path / "plots")}
    proc = subprocess.run(["bash", "scripts/hypergrad.sh", "device=cpu"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = {p.relative_to(tmp_path / "results"): json.loads(p.read_text())
                 for p in (tmp_path / "results").glob("*/*/*/seed*/summary.json")}
    methods = {"sgd", "sgd_hd", "sgdop_sgdnlop", "sgdop_adamlop", "nesterov", "sgdn_hd", "sgdnop_sgdnlop",
               "sgdnop_adamlop", "adam", "adam_hd", "adamop_adamlop", "adamop_sgdnlop"}
    assert {p.parts[1] for p in summaries if p.parts[0] == "digits_logreg"} == methods
    # digits MLP: alpha_0 in {1e-2, 1e-3, 1e-4} for every method (1e-3 is the main run)
    assert len([p for p in summaries if p.parts[0] == "digits_mlp"]) == 3 * len(methods)
    assert {s["status"] for s in summaries.values()} == {"finished"}
    plots = tmp_path / "plots"
    # the alpha_0 x beta grid: 3 x 3 for each HD method (one point of each is a main run)
    assert len([p for p in summaries if p.parts[:2] == ("digits_logreg", "sgd_hd")]) == 9
    for name in ("hypergrad/grid", "hypergrad/logreg", "hypergrad/mlp", "hypergrad/vgg", "hypergrad_alpha0/alpha0",
                 "hypergrad_alpha0/grid"):
        assert (plots / f"{name}.png").stat().st_size > 5000 and (plots / f"{name}.pdf").exists()
    table = (plots / "tables" / "hypergrad.md").read_text()
    # the table's final test loss of SGD-HD on the digits MLP is the trainer's own final number
    final = next(s for p, s in summaries.items() if p.parts[:2] == ("digits_mlp", "sgd_hd")
                 and p.parts[2].startswith("task.epochs=2,"))  # the main run (alpha_0 = 1e-3: no lr= part)
    row = next(r for r in markdown_rows(table.split("**digits_mlp")[1]) if r[0] == "SGD-HD")
    assert row[2] == f"{final['final']['test_loss']:.4g}"


def test_plots_redraws_the_papers_that_have_results(tmp_path):
    root = tmp_path / "results"
    for optim in ("momentum", "adam", "yellowfin"):
        write_run(root / "yellowfin", "digits_mlp", optim, 0, classification_rows(0), step_rows(0),
                  config={"trainer.staleness": 0})
    env = {**os.environ, "RESULTS_ROOT": str(root), "PLOTS": str(tmp_path / "plots")}
    proc = subprocess.run(["bash", "scripts/plots.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"no {root}/aggmo, skipping aggmo" in proc.stdout
    for name in ("yellowfin/sync", "yellowfin/async"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 5000
    assert ["Adam", "1 finished"] in [r[:2] for r in markdown_rows(
        (tmp_path / "plots" / "tables" / "yellowfin.md").read_text())]
    empty = subprocess.run(["bash", "scripts/plots.sh"], cwd=REPO, capture_output=True, text=True,
                           env={**env, "RESULTS_ROOT": str(tmp_path / "none")})
    assert empty.returncode == 1 and "no results under" in empty.stderr
