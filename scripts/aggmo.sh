#!/usr/bin/env bash
# AggMo (Lucas et al., ICLR 2019): CM, Nesterov, Adam and AggMo on the MNIST autoencoder, CIFAR-10 and
# CIFAR-100 (ResNet-34) and PTB (AWD-LSTM), each on a learning-rate grid (+tune=lr: the paper reports each
# method at its best lr); the damping study on the autoencoder (CM beta 0.9 / 0.99 / 0.999, AggMo
# [0, 0.9, 0.99] and [0, 0.9, 0.99, 0.999], Nesterov at 0.999); the 2-D quadratic's trajectories (CM beta 0.9 /
# 0.99 vs AggMo); then the figures and the table (each method at its tuned lr).
#   bash scripts/aggmo.sh [hydra overrides...]      e.g. hydra/launcher=joblib device=cuda
# Environment: RESULTS (default results/aggmo), SEEDS (default 0,1,2,3,4), PLOTS (default plots),
# QUICK=1: digits MLP for the image tasks (a 3-point lr grid, +tune=lr3) and the noisy quadratic for the
# damping study, 2 epochs, 1 seed.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-results/aggmo}
PLOTS=${PLOTS:-plots}
EXTRA=("$@")
OPTIMS=momentum,nesterov,adam,aggmo
CM_BETAS=0.9,0.99,0.999
AGGMO_BETAS="[0,0.9,0.99],[0,0.9,0.99,0.999]"

source scripts/_sweep.sh  # sweep OVERRIDES...: one Hydra multirun with SEEDS, RESULTS, SIZE, EXTRA

if [[ "${QUICK:-0}" == 1 ]]; then
  SEEDS=${SEEDS:-0}
  SIZE=(task.epochs=2 trainer.log_every=5)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny models: one thread each is fastest on a shared CPU
  sweep experiment=aggmo/cifar10 task=digits_mlp "optim=$OPTIMS" +tune=lr3
  # the noisy quadratic's curvatures reach 1000: lr 1e-3 keeps every beta stable, so damping is what differs
  DAMPING=(experiment=aggmo/mnist_ae task=noisy_quadratic optim.lr=1e-3)
else
  SEEDS=${SEEDS:-0,1,2,3,4}
  SIZE=()
  for task in mnist_ae cifar10 cifar100; do
    sweep "experiment=aggmo/$task" "optim=$OPTIMS" +tune=lr
  done
  sweep experiment=aggmo/ptb_awd "optim=$OPTIMS" +tune=aggmo_ptb   # AWD-LSTM's lr scale (SGD trains at 30)
  DAMPING=(experiment=aggmo/mnist_ae)
fi
# damping study (CM beta 0.9 and AggMo [0, 0.9, 0.99] are the default runs: same directories, not redone)
sweep "${DAMPING[@]}" optim=momentum "optim.momentum=$CM_BETAS"
sweep "${DAMPING[@]}" optim=aggmo "optim.betas=$AGGMO_BETAS"
sweep "${DAMPING[@]}" optim=nesterov optim.momentum=0.999
# passive damping on a 2-D quadratic (deterministic: one seed says it all)
toy() { python main.py -m seed=0 "results_dir=$RESULTS" experiment=aggmo/quadratic_2d "$@" "${EXTRA[@]}"; }
toy optim=momentum optim.momentum=0.9,0.99
toy optim=aggmo

python -m optbench.plot "figure=[aggmo,aggmo_rates]" table=aggmo results_dir="$RESULTS" plots_dir="$PLOTS"
