#!/usr/bin/env bash
# AdamP / SGDP (Heo et al., ICLR 2021): SGD (Nesterov, SGDP's lr 0.1 and weight decay 1e-5) vs SGDP and AdamW vs
# AdamP on CIFAR-10 with ResNet-18, logging the scale-invariant weight norm; the 2-D toy with momentum 0.9 and
# 0.99; then figures and table.
#   bash scripts/adamp.sh [hydra overrides...]      e.g. hydra/launcher=joblib device=cuda
# Environment: RESULTS (default results/adamp), SEEDS (default 0,1,2,3,4), PLOTS (default plots),
# QUICK=1: ResNet-20 on the digits instead of ResNet-18 on CIFAR-10, 2 epochs, 1 seed (the toy is tiny as is).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-results/adamp}
PLOTS=${PLOTS:-plots}
EXTRA=("$@")

source scripts/_sweep.sh  # sweep OVERRIDES...: one Hydra multirun with SEEDS, RESULTS, SIZE, EXTRA

if [[ "${QUICK:-0}" == 1 ]]; then
  SEEDS=${SEEDS:-0}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny models: one thread each is fastest on a shared CPU
  IMAGES=(experiment=adamp/cifar10 task=digits_logreg task.model=resnet20 task.epochs=2 trainer.log_every=5)
else
  SEEDS=${SEEDS:-0,1,2,3,4}
  IMAGES=(experiment=adamp/cifar10)
fi
sweep "${IMAGES[@]}" optim=nesterov optim.lr=0.1 optim.weight_decay=1e-5
sweep "${IMAGES[@]}" optim=sgdp,adamw,adamp
sweep experiment=adamp/toy optim=momentum,sgdp optim.momentum=0.9,0.99

python -m optbench.plot figure=adamp table=adamp results_dir="$RESULTS" plots_dir="$PLOTS"
