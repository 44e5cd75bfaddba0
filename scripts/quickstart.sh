#!/usr/bin/env bash
# Quickstart: every optimizer optbench has, on the embedded digits MLP (no download), 2 seeds each, one Hydra
# multirun in one process; then the comparison figure plots/quickstart.{png,pdf}.
# Extra arguments go to Hydra, e.g. `bash scripts/quickstart.sh task.epochs=5 device=cpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-results/quickstart}
optims=$(ls configs/optim/*.yaml | xargs -n1 basename | sed 's/\.yaml$//' | paste -sd, -)
python main.py -m task=digits_mlp "optim=$optims" seed=0,1 results_dir="$RESULTS" "$@"
python -m optbench.plot results_dir="$RESULTS" task=digits_mlp metrics=[train_loss,val_loss,val_acc] \
  out=plots/quickstart
