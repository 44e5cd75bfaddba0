#!/usr/bin/env bash
# Quickstart: every optimizer optbench has, on the embedded digits MLP (no download), 2 seeds each: one Hydra
# multirun, JOBS runs at a time (default: one per core; each run uses one CPU thread, trainer.threads=auto); the
# sweep ends with the summary table, then the ranking figure plots/quickstart.{png,pdf}. About 70 s on 2 cores.
# Left out: aggmo_exp (AggMo's own betas 0, 0.9, 0.99 in exponential form) and yellowfin_closed_loop (without
# asynchrony its measured momentum equals the tuned one, so it is YellowFin step for step).
# Extra arguments go to Hydra, e.g. `bash scripts/quickstart.sh task.epochs=5 device=cpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-results/quickstart}
optims=$(ls configs/optim/*.yaml | xargs -n1 basename | sed 's/\.yaml$//' \
  | grep -v -x -e aggmo_exp -e yellowfin_closed_loop | paste -sd, -)
JOBS=${JOBS:-$(python -c "import os; print(os.cpu_count() or 1)")}
python main.py -m hydra/launcher=joblib hydra.launcher.n_jobs="$JOBS" task=digits_mlp "optim=$optims" seed=0,1 \
  results_dir="$RESULTS" "$@"
python -m optbench.plot results_dir="$RESULTS" task=digits_mlp ranking=true out=plots/quickstart
