"""The reproduction report: claims evaluate from recorded run directories to computed verdicts (a false claim
must come out 'not reproduced', absent runs, a missing dataset, a GPU claim on a CPU 'not run'), claims files are
validated, the reports and the README's status table are written from the verdicts, and the command end to end."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import markdown_rows
from optbench import claims as c
from optbench import reports
from optbench.data import idx
from optbench.reproduce import needed_run_sets
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
    (lambda s: s["claims"][0].update(epoch=1, step=10), "give one of them"),
    (lambda s: s["claims"][0].update(kind="time_to_target"), "needs the target value of weight_norm"),
    (lambda s: s["claims"][0].update(budget="huge"), "budget must be one of quick, full"),
    (lambda s: s["runs"]["sgdp"].update(budgets={"slow": []}), "'slow': budgets are quick, full"),
    (lambda s: s.update(figures=["figure=adamp"]), "figures: each entry is a list"),
    (lambda s: s["claims"][0].update(log="tensorboard"), "log must be metrics"),
    (lambda s: s["claims"][0].update(smooth=5), "with log: steps"),
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
    verdicts = {row[0]: row[3] for row in markdown_rows(report)}
    toy = {k: v for k, v in verdicts.items() if k.startswith(("momentum", "sgdp"))}
    assert len(toy) == 4 and set(toy.values()) == {"reproduced"}, report
    assert all(v.startswith("not run (needs a GPU") for k, v in verdicts.items() if k.startswith(("cifar10_",
                                                                                                  "imagenet_")))
    assert "2.933" in report and "27.88" in report


# a small claims file of our own: SGD and Adam on the digits, with curves we write (no training)
CURVES = {"sgd": [2.3, 1.0, 0.6, 0.5, 0.45], "adam": [2.3, 0.5, 0.4, 0.3, 0.25]}


@pytest.fixture()
def digits(tmp_path):
    spec = {"paper": "mine", "runs": {name: {"overrides": ["task=digits_logreg", f"optim={name}"], "seeds": [0, 1]}
                                      for name in CURVES}, "claims": []}
    for name, curve in CURVES.items():
        for path, shift in zip(c.run_paths(spec, name, tmp_path), (0.0, 0.02)):
            rows = [{"epoch": e, "step": 100 * e, "train_loss": v + shift, "val_acc": 1 - v / 3} for e, v in
                    enumerate(curve)]
            steps = [{"step": 10 * i, "epoch": (10 * i - 1) // 100 + 1, "loss": curve[0] - i / 40 * (2 if name == "adam"
                      else 1) + (0.2 if i % 2 else 0.0)} for i in range(1, 41)]  # zig-zag: smoothing matters
            write_run(tmp_path, *path.parts[-4:-2], int(path.name[4:]), rows, steps, variant=path.parts[-2])
    return spec


def _check(spec, root, **claim):
    claim = dict({"id": "x", "statement": "s", "source": "here", "where": "cpu", "metric": "train_loss"}, **claim)
    claim["runs"] = claim["runs"] if isinstance(claim["runs"], list) else [claim["runs"]]
    return c.evaluate(spec, claim, root)


def test_iterations_to_a_target_and_speedups_are_read_off_the_seed_mean_curve(tmp_path, digits):
    hit = _check(digits, tmp_path, kind="time_to_target", runs="sgd", target=0.5, compare="below", value=500)
    assert hit.verdict == "reproduced" and hit.ours.startswith("400 iterations")  # mean 0.51 at 300, 0.46 at 400
    never = _check(digits, tmp_path, kind="time_to_target", runs="sgd", target=0.1, compare="below", value=500)
    assert never.verdict == "not reproduced" and never.ours.startswith("never")
    # Adam reaches SGD's best (mean 0.46 at step 400) at step 200: a 2x speed-up; 3x is claimed falsely
    speed = _check(digits, tmp_path, kind="speedup", runs=["sgd", "adam"], compare="above", value=1.9)
    assert speed.verdict == "reproduced" and speed.ours.startswith("2x: 400 / 200"), speed.ours
    assert _check(digits, tmp_path, kind="speedup", runs=["sgd", "adam"], compare="above", value=3).verdict == \
        "not reproduced"
    acc = _check(digits, tmp_path, kind="time_to_target", runs="adam", metric="val_acc", target=0.85,
                 compare="approx", value=200, tolerance={"abs": 0})  # accuracy counts upward
    assert acc.verdict == "reproduced", acc.ours


def test_per_iteration_claims_read_steps_csv_smoothed(tmp_path, digits):
    # the raw loss zig-zags by 0.2 every other logged step; Adam falls twice as fast as SGD
    raw = _check(digits, tmp_path, kind="time_to_target", runs="sgd", metric="loss", log="steps", target=2.0,
                 compare="approx", value=120, tolerance={"abs": 0})  # 2.3 - 12/40 at step 120 (even: no bump)
    assert raw.verdict == "reproduced", raw.ours
    smooth = _check(digits, tmp_path, kind="time_to_target", runs="sgd", metric="loss", log="steps", smooth=2,
                    target=2.0, compare="approx", value=170, tolerance={"abs": 0})  # the pair means: 2.4 - (2i - 1) / 80
    assert smooth.verdict == "reproduced", smooth.ours
    speed = _check(digits, tmp_path, kind="speedup", runs=["sgd", "adam"], metric="loss", log="steps", smooth=2,
                   compare="approx", value=1.905, tolerance={"abs": 0.001})  # SGD's best 1.4125 at 400, Adam's at 210
    assert speed.verdict == "reproduced", speed.ours
    after = _check(digits, tmp_path, kind="final", runs="adam", metric="loss", log="steps", step=95,
                   compare="approx", value=1.8, tolerance={"abs": 1e-9})  # the logged step 100: 2.3 - 2 * 10 / 40
    assert after.verdict == "reproduced", after.ours


def test_a_metric_after_n_iterations_is_the_first_epoch_end_past_them(tmp_path, digits):
    after = _check(digits, tmp_path, kind="final", runs="sgd", step=150, compare="approx", value=0.61,
                   tolerance={"abs": 1e-9})  # the epoch end at step 200: 0.6 and 0.62
    assert after.verdict == "reproduced", after.ours
    ratio = _check(digits, tmp_path, kind="ratio", runs=["adam", "sgd"], step=200, compare="below", value=0.7)
    assert ratio.verdict == "reproduced" and ratio.ours.startswith("0.6721 = 0.41")  # 0.41 / 0.61
    late = _check(digits, tmp_path, kind="final", runs="sgd", step=10_000, compare="below", value=1)
    assert late.verdict == "not run" and "step 10000 not reached" in late.why


def test_missing_data_budget_and_gpu_claims_are_not_run_and_their_runs_not_started(tmp_path, monkeypatch, digits):
    monkeypatch.setenv("OPTBENCH_DATA_DIR", str(tmp_path / "no_data"))
    monkeypatch.setitem(idx.SYSTEM_DIRS, "FashionMNIST", (tmp_path / "no_debian",))
    digits["runs"]["fmnist"] = {"overrides": ["task=fmnist_logreg", "optim=sgd"], "seeds": [0]}
    digits["claims"] = [{"id": "f", "statement": "s", "source": "x", "where": "cpu", "metric": "train_loss",
                         "kind": "less_than", "runs": ["fmnist", "sgd"]},
                        {"id": "g", "statement": "s", "source": "x", "where": "gpu", "metric": "train_loss",
                         "kind": "final", "runs": ["adam"], "compare": "below", "value": 1},
                        {"id": "b", "statement": "s", "source": "x", "where": "cpu", "metric": "train_loss",
                         "kind": "final", "runs": ["adam"], "compare": "below", "value": 1, "budget": "full"}]
    verdicts = {v.claim["id"]: v for v in c.evaluate_all(digits, tmp_path)}
    assert verdicts["f"].verdict == "not run"
    assert verdicts["f"].why.startswith("data missing: FashionMNIST not found: expected " + str(tmp_path / "no_data"))
    assert "apt-get install dataset-fashion-mnist" in verdicts["f"].why
    assert verdicts["g"].why == "needs a GPU (where=gpu)" and verdicts["b"].why == "needs budget=full"
    assert needed_run_sets(digits, "cpu", "quick") == []  # nothing to run here
    assert needed_run_sets(digits, "gpu", "full") == ["adam"]  # sgd only served the claim without data
    assert c.evaluate_all(digits, tmp_path, budget="full")[2].verdict == "reproduced"


def test_reports_and_the_readme_status_table_come_from_the_verdicts(tmp_path, digits):
    digits["claims"] = [
        {"id": "adam_faster", "statement": "Adam is faster.", "source": "Fig. 1", "where": "cpu", "kind": "speedup",
         "metric": "train_loss", "runs": ["sgd", "adam"], "compare": "above", "value": 1.0},
        {"id": "false_claim", "statement": "SGD beats Adam.", "source": "Fig. 1", "where": "cpu", "kind": "less_than",
         "metric": "train_loss", "runs": ["sgd", "adam"]},
        {"id": "on_gpu", "statement": "Big.", "source": "Table 2", "where": "gpu", "kind": "less_than",
         "metric": "train_loss", "runs": ["adam", "sgd"]}]
    figure = tmp_path / "fig.png"
    figure.write_bytes(b"\x89PNG not really")
    record = reports.record(digits, c.evaluate_all(digits, tmp_path), {
        "where": "cpu", "budget": "quick", "results_dir": str(tmp_path), "figures": [str(figure)],
        "figures_failed": [], "elapsed_s": 1.0})
    json_path, md_path, html_path = reports.write(record, tmp_path / "reports")
    rows = {row[0]: row for row in markdown_rows(md_path.read_text())}
    assert rows["adam_faster"][3] == "reproduced" and rows["false_claim"][3] == "not reproduced"
    assert rows["on_gpu"][3] == "not run (needs a GPU (where=gpu))"
    assert "(../sgd/" not in rows["false_claim"][4] and "](../digits_logreg/sgd/" in rows["false_claim"][4]
    page = html_path.read_text()
    assert "data:image/png;base64," in page and page.count("<tr") == 4
    assert json.loads(json_path.read_text())["claims"][1]["verdict"] == "not reproduced"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{reports.BEGIN}\nold\n{reports.END}\n\nafter\n")
    reports.update_readme(readme, tmp_path / "reports")
    text = readme.read_text()
    assert "old" not in text and text.endswith("after\n") and "mine: 1 reproduced, 1 not reproduced, 1 not run" in text
    table = {row[1]: row[2] for row in markdown_rows(text)}
    assert table == {"claim": "verdict", "adam_faster": "reproduced", "false_claim": "not reproduced",
                     "on_gpu": "not run: needs a GPU"}


def test_runner_hydra_starts_one_multirun_per_run_set_on_the_named_launcher(monkeypatch, adamp):
    import optbench.reproduce as r

    seen = []
    monkeypatch.setattr(r.subprocess, "run", lambda command, **kw: seen.append(command) or
                        subprocess.CompletedProcess(command, 0, "", ""))
    args = r.parse(["paper=adamp", "runner=hydra", "launcher=joblib", "jobs=1", "results_dir=R"])
    r.run_all(adamp, args)
    assert [cmd[3:6] for cmd in seen] == [["-m", "hydra/launcher=joblib", "experiment=adamp/toy"]] * 3
    assert seen[2][-4:] == ["optim=sgdp", "seed=0,1", "results_dir=R", "trainer.progress=false"]
    with pytest.raises(SystemExit, match="runner is local\\|hydra"):
        r.parse(["paper=adamp", "runner=slurm"])


def test_the_readme_status_table_is_generated_from_the_committed_reports(monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    assert reports.status_section("reports") in (REPO / "README.md").read_text(), \
        "README's status table is stale: run `python -m optbench.reports readme=README.md`"
