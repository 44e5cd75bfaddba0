"""The reproduction report: claims evaluate from recorded run directories to computed verdicts (a false claim
must come out 'not reproduced', absent runs 'not run'), claims files are validated, and the command end to end."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from optbench import claims as c
from test_plot_rundirs import write_run


def _record(root, spec, name, norms):
    """Fake finished runs of a run set, in the directories the trainer would give it, final weight_norm given."""
    for path, norm in zip(c.run_paths(spec, name, root), norms):
        task, optim, variant, seed = path.parts[-4], path.parts[-3], path.parts[-2], int(path.name[4:])
        rows = [{"epoch": e, "step": 50 * e, "val_loss": -1.0, "weight_norm": 1.0 + (norm - 1.0) * e / 2}
                for e in range(3)]
        write_run(root, task, optim, seed, rows, variant=variant)


@pytest.fixture(scope="module")
def adamp():
    spec = c.load_claims("adamp")
    spec["runs"]["sgdp"]["seeds"] = [0, 1]
    return spec


def _claim(spec, claim_id, **changes):
    claim = copy.deepcopy(next(x for x in spec["claims"] if x["id"] == claim_id))
    claim.update(changes)
    return claim


def test_claims_evaluate_from_recorded_runs(tmp_path, adamp):
    _record(tmp_path, adamp, "momentum_09", [2.93])
    _record(tmp_path, adamp, "sgdp", [1.1, 1.2])
    verdict = c.evaluate(adamp, _claim(adamp, "momentum_norm_09"), tmp_path)
    assert verdict.verdict == "reproduced" and verdict.ours.startswith("2.93")
    sgdp = c.evaluate(adamp, _claim(adamp, "sgdp_norm"), tmp_path)
    assert sgdp.verdict == "reproduced" and "1.15" in sgdp.ours and "n=2" in sgdp.ours
    assert c.evaluate(adamp, _claim(adamp, "sgdp_vs_momentum"), tmp_path).verdict == "reproduced"
    false = c.evaluate(adamp, _claim(adamp, "momentum_norm_09", value=5.0), tmp_path)
    assert false.verdict == "not reproduced" and "2.93" in false.ours
    order = _claim(adamp, "sgdp_vs_momentum", kind="less_than")  # momentum < sgdp: false
    assert c.evaluate(adamp, order, tmp_path).verdict == "not reproduced"
    assert c.evaluate(adamp, dict(order, runs=["sgdp", "momentum_09"]), tmp_path).verdict == "reproduced"


def test_absent_unfinished_and_gpu_claims_are_not_run(tmp_path, adamp):
    absent = c.evaluate(adamp, _claim(adamp, "momentum_norm_099"), tmp_path)
    assert absent.verdict == "not run" and "runs absent" in absent.why and absent.ours == ""
    gpu = c.evaluate(adamp, _claim(adamp, "momentum_norm_09", where="gpu"), tmp_path)
    assert gpu.verdict == "not run" and "GPU" in gpu.why
    path = c.run_paths(adamp, "momentum_09", tmp_path)[0]
    write_run(tmp_path, *path.parts[-4:-2], 0, [{"epoch": 0, "weight_norm": 1.0}], variant=path.parts[-2],
              status="interrupted")
    unfinished = c.evaluate(adamp, _claim(adamp, "momentum_norm_09"), tmp_path)
    assert unfinished.verdict == "not run" and "interrupted" in unfinished.why


@pytest.mark.parametrize("change, message", [
    (lambda s: s["claims"][0].pop("metric"), "missing key(s) metric"),
    (lambda s: s["claims"][0].update(colour="red"), "unknown key(s) colour"),
    (lambda s: s["claims"][0].update(kind="median"), "kind 'median'"),
    (lambda s: s["claims"][0].update(runs="nowhere"), "'nowhere' is not a run set"),
    (lambda s: s["claims"][0].update(tolerance={}), "approx needs rel or abs"),
    (lambda s: s["runs"]["sgdp"].pop("overrides"), "runs.sgdp: missing key(s) overrides"),
])
def test_claims_files_are_validated_with_the_file_and_key(tmp_path, change, message):
    spec = yaml.safe_load(c.claims_path("adamp").read_text())
    change(spec)
    path = tmp_path / "adamp.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(c.ClaimError, match="adamp.yaml") as error:
        c.load_claims("adamp", path)
    assert message in str(error.value)


def test_every_shipped_claims_file_loads():
    for path in sorted(c.claims_path("x").parent.glob("*.yaml")):
        assert c.load_claims(path.stem)["claims"]


def test_reproduce_writes_the_report_end_to_end(tmp_path):
    """The adamp toy's runs take seconds: run them through the trainer and check every verdict is computed."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "optbench.reproduce", "paper=adamp",
                           f"results_dir={tmp_path / 'results'}", f"reports_dir={tmp_path / 'reports'}"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "reports" / "adamp.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| momentum") or line.startswith("| sgdp")]
    assert len(rows) == 4 and all("| reproduced |" in row for row in rows), report
    assert "2.933" in report and "27.88" in report
