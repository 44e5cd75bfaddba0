#!/usr/bin/env bash
# The prepared GPU check (issue 18), in one go on a machine with a CUDA GPU:
#   1. installs the wheels of .whl/ this machine lacks (hydra-core, omegaconf, antlr4; pandas, tabulate if absent:
#      fetch them beforehand with `bash scripts/gpu_wheels.sh` where pip works) into a --target dir on PYTHONPATH,
#   2. runs the CUDA tests (pytest -m cuda tests/test_cuda.py),
#   3. runs the GPU benchmarks (optimizer step, data pipeline, LSTM epoch, ResNet-18 epoch) at sizes that fit,
#   4. writes OUT/summary.md + OUT/summary.json (after every step), OUT/log.txt and OUT/junit.xml.
# Each step has its own timeout and all of them one budget (GPU_CHECK_BUDGET, default 450 s: under 8 minutes on
# one H200). DRY=1: tiny sizes on the CPU, the CUDA tests skip themselves (tests/test_gpu_check.py runs this).
#
#   bash scripts/gpu_check.sh OUT            # exit status 0 when every step passed
#   DRY=1 bash scripts/gpu_check.sh OUT
set -u
OUT=${1:?usage: [DRY=1] bash scripts/gpu_check.sh OUT}
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
export PYTHON
exec "$PYTHON" scripts/gpu_check.py "$OUT"
