"""The prepared GPU check (scripts/gpu_check.sh, issue 18) keeps working while no GPU is around: its dry run (tiny
sizes on the CPU, the CUDA tests skipping themselves) runs every step and writes the summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

STEPS = ["install", "environment", "cuda_tests", "optim_step", "data_pipeline", "lstm_throughput", "epoch",
         "ddp_overhead"]
SKIPPED_WHEN_DRY = {"ddp_overhead"}


def test_dry_run_runs_every_step_and_writes_the_summaries(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "DRY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("GPU_CHECK_BUDGET", None)
    env.pop("GPU_CHECK_INLINE", None)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry"] is True and summary["complete"] is True
    assert [s["name"] for s in summary["steps"]] == STEPS
    for step in summary["steps"]:
        assert step["command"] and step["key_lines"], step
        if step["name"] in SKIPPED_WHEN_DRY:
            assert step["status"] == "skipped" and "DRY" in step["key_lines"][0], step
        else:
            assert step["status"] == "ok" and step["rc"] == 0 and step["seconds"] >= 0, step
    keys = {s["name"]: "\n".join(s["key_lines"]) for s in summary["steps"]}
    assert "cuda_available=False" in keys["environment"]
    assert "skipped" in keys["cuda_tests"] and "failed" not in keys["cuda_tests"]  # skipped, not failed
    assert "| torch Adam (foreach) |" in keys["optim_step"] and "| torch Adam (fused) |" in keys["optim_step"]
    assert "speed-up" in keys["data_pipeline"] and "time ratio" in keys["lstm_throughput"]
    for loop in ("optbench training epoch", "bare loop + DataLoader", "bare model"):
        assert f"| {loop} | none |" in keys["epoch"] and f"| {loop} | amp+channels_last |" in keys["epoch"]
    markdown = (out / "summary.md").read_text()
    assert all(f"## {name}: {'skipped' if name in SKIPPED_WHEN_DRY else 'ok'}" in markdown for name in STEPS)
    assert (out / "junit.xml").exists() and "===== epoch:" in (out / "log.txt").read_text()
