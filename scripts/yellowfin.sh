#!/usr/bin/env bash
# YellowFin (Zhang, Mitliagkas & Re, SysML 2019): momentum SGD, Adam and YellowFin synchronously, and Adam,
# open-loop and closed-loop YellowFin asynchronously (Adam and momentum SGD tuned synchronously on the paper's
# grids, +tune=yellowfin_baselines; YellowFin tunes itself) (16 workers simulated: gradients 15 steps stale) on
# CIFAR-10 (ResNet-110, 40,001 iterations) / CIFAR-100 (ResNet-164, 150,001 iterations), the PTB LSTM of the
# TensorFlow release (2 x 200, 30,199 iterations) and the TinyShakespeare char-rnn; then the figures (curves,
# tuned lr and momentum, measured vs algorithmic momentum) and the speedup table.
#   bash scripts/yellowfin.sh [hydra overrides...]      e.g. hydra/launcher=joblib device=cuda
# Environment: RESULTS (default results/yellowfin), SEEDS (default 0,1,2,3,4), PLOTS (default plots),
# QUICK=1: the digits MLP and the noisy quadratic, 2 epochs (the presets' budgets in iterations off), 1 seed,
# the baselines on a 3-point lr grid.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-results/yellowfin}
PLOTS=${PLOTS:-plots}
EXTRA=("$@")
BASELINES=momentum,adam
ASYNC=adam,yellowfin,yellowfin_closed_loop

source scripts/_sweep.sh  # sweep OVERRIDES...: one Hydra multirun with SEEDS, RESULTS, SIZE, EXTRA

if [[ "${QUICK:-0}" == 1 ]]; then
  SEEDS=${SEEDS:-0}
  SIZE=(task.epochs=2 task.max_steps=null trainer.log_every=2)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny models: one thread each is fastest on a shared CPU
  # the CIFAR-10 preset on the digits, with the digits MLP instead of its ResNet-110
  TASKS=("experiment=yellowfin/cifar10 task=digits_mlp task.model=mlp" "task=noisy_quadratic")
  TUNE=lr3
else
  SEEDS=${SEEDS:-0,1,2,3,4}
  SIZE=()
  TASKS=(experiment=yellowfin/cifar10 experiment=yellowfin/cifar100 experiment=yellowfin/ptb_tf
         experiment=yellowfin/tinyshakespeare_char)
  TUNE=yellowfin_baselines
fi
for task in "${TASKS[@]}"; do
  read -r -a choice <<< "$task"
  sweep "${choice[@]}" "optim=$BASELINES" "+tune=$TUNE"
  sweep "${choice[@]}" optim=yellowfin
  sweep "${choice[@]}" "optim=$ASYNC" trainer.staleness=15
done

python -m optbench.plot figure=yellowfin table=yellowfin results_dir="$RESULTS" plots_dir="$PLOTS"
