"""The prepared GPU check (issue 18), run by scripts/gpu_check.sh: installs the wheels of .whl/ that this machine
lacks, runs the CUDA tests and the GPU benchmarks, each step in its own process under its own timeout and all of
them under one overall budget, and writes OUT/summary.md and OUT/summary.json (rewritten after every step, so a
run cut off still reports), OUT/log.txt (every step's whole output) and OUT/junit.xml (the CUDA tests).

    bash scripts/gpu_check.sh OUT          # a CUDA machine: the real sizes, under 8 minutes on one H200
    DRY=1 bash scripts/gpu_check.sh OUT    # any CPU: tiny sizes, the CUDA tests skip themselves

Each step is a forked child in its own session (killed with its children at its timeout; its output streams to
this process, which prints and logs it). Normally the child execs a fresh interpreter. In DRY mode this process
imports torch, torchvision, Hydra and optbench once and the children run the same commands in the forked
interpreter (runpy): that saves ~10 s of imports per step on a small CPU, which keeps the dry run inside the
normal test suite (tests/test_gpu_check.py) short. Environment: GPU_CHECK_BUDGET (seconds for all steps; default
450, DRY 150), GPU_CHECK_INLINE (1: run the steps in forks of this interpreter, 0: exec a fresh one; default: 1
in DRY mode), PYTHON (the interpreter, default this one).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".whl"
SITE = Path(tempfile.gettempdir()) / "optbench-gpu-site"
# module -> wheel name prefix: installed from .whl/ only where the module is missing (required first)
PACKAGES = {"hydra": "hydra_core", "omegaconf": "omegaconf", "antlr4": "antlr4_python3_runtime",
            "pandas": "pandas", "dateutil": "python_dateutil", "tabulate": "tabulate",
            "adamp": "adamp", "expectigrad": "expectigrad", "torch_optimizer": "torch_optimizer",
            "pytorch_ranger": "pytorch_ranger"}
OPTIONAL = {"adamp", "expectigrad", "torch_optimizer", "pytorch_ranger"}  # the benchmark's official references
KEY_LINE = re.compile(r"^\||ratio|speed-up|device=|optimizer\.step|passed|failed|error|skipped|warning|"
                      r"timed out", re.IGNORECASE)

ENVIRONMENT = r"""
import os, platform, shutil, subprocess, sys
import importlib.metadata as md
print(f"python={platform.python_version()} ({sys.executable}) cpus={os.cpu_count()} host={platform.node()}")
import torch
import torch.distributed as dist
cuda = torch.cuda.is_available()
print(f"torch={torch.__version__} cuda_build={torch.version.cuda} cuda_available={cuda}")
if cuda:
    p = torch.cuda.get_device_properties(0)
    print(f"device={p.name} capability={p.major}.{p.minor} memory={p.total_memory / 2**30:.0f} GiB "
          f"multiprocessors={p.multi_processor_count} count={torch.cuda.device_count()} "
          f"nccl={dist.is_nccl_available()}")
for name in ("hydra-core", "omegaconf", "antlr4-python3-runtime", "pandas", "numpy", "tabulate", "torchvision",
             "triton", "pytest", "adamp", "expectigrad", "torch-optimizer"):
    try:
        print(f"{name}={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                          "--format=csv"], capture_output=True, text=True).stdout.strip())
"""


@dataclass
class Step:
    name: str
    argv: list[str]  # interpreter arguments: ["-m", module, ...], ["-c", code] or [script, ...]
    timeout: float
    env: dict = field(default_factory=dict)
    all_lines: bool = False  # the summary keeps every output line (else the KEY_LINE ones)
    dry_skip: str = ""  # why a dry run skips this step


def steps(dry: bool, out: Path) -> list[Step]:
    ddp = Step("ddp_overhead", ["benchmarks/ddp_scaling.py", "--nproc", "1", "--ddp", "--device", "cuda",
                                "--epochs", "2", "--train", "12800"], 90,
               dry_skip="two more interpreters; tests/test_scale_out.py runs torchrun on the CPU")
    tests = Step("cuda_tests", ["-m", "pytest", "-q", "-m", "cuda", "-rfEsxXp", "-p", "no:cacheprovider",
                                f"--junitxml={out / 'junit.xml'}", "tests/test_cuda.py"], 90 if dry else 240)
    environment = Step("environment", ["-c", ENVIRONMENT], 60, all_lines=True)
    if dry:  # tiny sizes on the CPU: the same scripts and options, seconds each
        return [environment, tests,
                Step("optim_step", ["benchmarks/optim_step.py", "--device", "cpu", "--model", "resnet20",
                                    "--rounds", "1", "--steps", "1"], 60, {"OPTBENCH_FUSED": "0"}),
                Step("data_pipeline", ["benchmarks/data_pipeline.py", "--device", "cpu", "--images", "512",
                                       "--repeats", "1", "--workers", "1"], 60),
                Step("lstm_throughput", ["benchmarks/lstm_throughput.py", "--device", "cpu", "--tokens", "1400",
                                         "--vocab", "200", "--hidden", "16", "--repeats", "1"], 60),
                Step("epoch", ["benchmarks/epoch.py", "--device", "cpu", "--images", "128", "--batch-size", "64",
                               "--model", "logreg", "--workers", "1", "--fast", "amp,channels_last"], 60), ddp]
    return [environment, tests,
            Step("optim_step", ["benchmarks/optim_step.py", "--device", "cuda", "--rounds", "7", "--steps", "10"],
                 120),
            Step("data_pipeline", ["benchmarks/data_pipeline.py", "--device", "cuda", "--images", "50000",
                                   "--repeats", "3", "--workers", "2"], 120),
            Step("lstm_throughput", ["benchmarks/lstm_throughput.py", "--device", "cuda", "--tokens", "929589",
                                     "--repeats", "2"], 150),
            Step("epoch", ["benchmarks/epoch.py", "--device", "cuda", "--images", "25600", "--batch-size", "128",
                           "--workers", "2", "--repeats", "1", "--fast", "amp,channels_last,compile"], 300),
            ddp]  # last: it runs only if the budget has time left


# ------------------------------------------------------------------------------------------------ install
def install_missing() -> dict:
    """Install into SITE the wheels of the modules this interpreter lacks; SITE goes on PYTHONPATH."""
    start = time.monotonic()
    missing = [m for m in PACKAGES if importlib.util.find_spec(m) is None]
    wheels, lines, status = [], [], "ok"
    for module in missing:
        found = sorted(WHEELS.glob(f"{PACKAGES[module]}-*.whl"), key=lambda p: p.name.lower())
        if found:
            wheels.append(found[-1])
            lines.append(f"missing {module}: installing {found[-1].name}")
        else:
            lines.append(f"missing {module}: no wheel in .whl/ (run scripts/gpu_wheels.sh where pip works)")
            status = status if module in OPTIONAL else "failed"
    if wheels:
        SITE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(SITE), *map(str, wheels)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:  # a wheel is a zip laid out for site-packages: unpacking it is the fallback
            lines.append(f"pip failed ({proc.stderr.strip().splitlines()[-1:]}); unpacking the wheels instead")
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(SITE)
        sys.path.insert(0, str(SITE))
        importlib.invalidate_caches()
    path = [str(REPO / "src"), *([str(SITE)] if wheels else []), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    sys.path.insert(0, str(REPO / "src"))
    still = [m for m in missing if importlib.util.find_spec(m) is None]
    if still:
        lines.append(f"still missing: {', '.join(still)}")
        status = "failed" if set(still) - OPTIONAL else status
    lines.append("nothing to install" if not missing else f"PYTHONPATH={os.environ['PYTHONPATH']}")
    for line in lines:
        print(line, flush=True)
    return {"name": "install", "command": f"install the wheels of missing modules from .whl/ into {SITE}",
            "status": status, "rc": 0 if status == "ok" else 1, "seconds": round(time.monotonic() - start, 1),
            "timeout_s": None, "key_lines": lines}


# ------------------------------------------------------------------------------------------------ run a step
def _run_inline(argv: list[str]) -> int:
    """The command in this (forked) interpreter, as `python ARGV` would run it; returns the exit status."""
    import runpy

    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = list(argv)
            sys.path.insert(0, str((REPO / argv[0]).parent))
            runpy.run_path(argv[0], run_name="__main__")
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def _child(step: Step, write_fd: int, inline: bool) -> None:
    os.setsid()
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    os.environ.update(step.env)
    code = 1
    try:
        if not inline:
            os.execv(PYTHON, [PYTHON, *step.argv])
        code = _run_inline(step.argv)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _kill(pid: int) -> None:
    """The step's whole session (DataLoader workers, torchrun and its workers too)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(3 if sig == signal.SIGTERM else 0)


def run_step(step: Step, timeout: float, inline: bool, log) -> tuple[int, str, float, list[str]]:
    """(rc, status, seconds, output lines) of one step, its output streamed to stdout and the log."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(step, write_fd, inline)
    os.close(write_fd)
    chunks, status, exited, rc = [], None, None, None
    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.5)
        data = os.read(read_fd, 65536) if ready else b""
        if data:
            chunks.append(data)
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            log.write(data)
            log.flush()
        if exited is None:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                exited, rc = time.monotonic(), os.waitstatus_to_exitcode(wait_status)
        if ready and not data:  # end of output: the child and everything it started are gone
            break
        if exited is not None and time.monotonic() - exited > 5:  # a grandchild holds the pipe: stop reading
            break
        if exited is None and time.monotonic() - start > timeout:
            status = "timeout"
            _kill(pid)
            os.waitpid(pid, 0)
            rc, exited = 124, time.monotonic()
    os.close(read_fd)
    if exited is None:
        _, wait_status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(wait_status)
    _kill(pid)  # leftovers of a finished step
    text = b"".join(chunks).decode(errors="replace")
    return rc, status or ("ok" if rc == 0 else "failed"), time.monotonic() - start, text.splitlines()


def key_lines(lines: list[str], failed: bool, everything: bool = False) -> list[str]:
    keys = [line.rstrip() for line in lines if everything or KEY_LINE.search(line)][:150]
    if failed:
        keys += ["-- last lines --"] + [line.rstrip() for line in lines[-20:]]
    return keys


# ------------------------------------------------------------------------------------------------ summary
def write_summary(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    mode = "DRY run on a CPU (tiny sizes)" if summary["dry"] else "GPU run"
    lines = [f"# GPU check: {mode}", "",
             f"Started {summary['started']}, {summary['elapsed_s']:.0f} s so far of a {summary['budget_s']:.0f} s "
             f"budget; {'complete' if summary['complete'] else 'INCOMPLETE (cut off, or still running)'}.", "",
             "| step | status | rc | seconds | command |", "|---|---|---|---|---|"]
    for s in summary["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['rc']} | {s['seconds']} | `{s['command']}` |")
    for s in summary["steps"]:
        lines += ["", f"## {s['name']}: {s['status']}", ""]
        table = False
        for line in s["key_lines"]:
            is_row = line.startswith("|")
            if table != is_row and lines[-1]:  # a blank line between a table and the indented text
                lines.append("")
            lines.append(line if is_row else f"    {line}")
            table = is_row
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def preload() -> None:
    """Inline mode: what every step imports, imported once before the forks."""
    import importlib

    for module in ("numpy", "torch", "torchvision", "hydra", "pytest", "optbench.train", "optbench.tasks"):
        importlib.import_module(module)


PYTHON = os.environ.get("PYTHON") or sys.executable


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: [DRY=1] bash scripts/gpu_check.sh OUT", file=sys.stderr)
        return 2
    out = Path(sys.argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dry = os.environ.get("DRY", "") not in ("", "0")
    budget = float(os.environ.get("GPU_CHECK_BUDGET") or (150 if dry else 450))
    os.chdir(REPO)
    if dry:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    started, clock = datetime.datetime.now().isoformat(timespec="seconds"), time.monotonic()
    summary = {"dry": dry, "started": started, "budget_s": budget, "elapsed_s": 0.0, "complete": False,
               "steps": [install_missing()]}
    write_summary(out, summary)
    inline = os.environ.get("GPU_CHECK_INLINE", "1" if dry else "0") not in ("", "0")
    if inline:
        preload()
    with open(out / "log.txt", "wb") as log:
        for step in steps(dry, out):
            left = budget - (time.monotonic() - clock)
            command = " ".join(["python3", *step.argv]) if step.argv[0] != "-c" else "python3 -c <environment>"
            header = f"\n===== {step.name}: {command} (timeout {min(step.timeout, left):.0f} s)\n"
            print(header, end="", flush=True)
            log.write(header.encode())
            if left < 10 or (dry and step.dry_skip):
                why = f"DRY: {step.dry_skip}" if dry and step.dry_skip else "no time left in the budget"
                record = {"status": "skipped", "rc": None, "seconds": 0, "key_lines": [why]}
            else:
                rc, status, seconds, lines = run_step(step, min(step.timeout, left), inline, log)
                if status == "timeout":
                    lines.append(f"timed out after {seconds:.0f} s")
                record = {"status": status, "rc": rc, "seconds": round(seconds, 1),
                          "key_lines": key_lines(lines, status != "ok", step.all_lines)}
            summary["steps"].append({"name": step.name, "command": command, "timeout_s": step.timeout, **record})
            summary["elapsed_s"] = round(time.monotonic() - clock, 1)
            write_summary(out, summary)
    summary["complete"] = True
    write_summary(out, summary)
    print(f"\ngpu_check: wrote {out / 'summary.md'}; steps: "
          + ", ".join(f"{s['name']} {s['status']}" for s in summary["steps"]), flush=True)
    return 0 if all(s["status"] in ("ok", "skipped") for s in summary["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
