#!/usr/bin/env bash
# Expectigrad (Daley & Amato, 2020): Adam, AMSGrad and Expectigrad on Reddi et al.'s counterexample
# (deterministic and stochastic) and on the MNIST / Fashion-MNIST MLPs and CIFAR-10, each on a learning-rate
# grid there (+tune=lr; QUICK: +tune=lr3); then figures and table (each optimizer at its tuned lr).
#   bash scripts/expectigrad.sh [hydra overrides...]      e.g. hydra/launcher=joblib device=cuda
# Environment: RESULTS (default results/expectigrad), SEEDS (default 0,1,2,3,4), PLOTS (default plots),
# QUICK=1: the counterexamples (short) and the digits MLP for the image tasks, 2 epochs, 1 seed.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-results/expectigrad}
PLOTS=${PLOTS:-plots}
EXTRA=("$@")
OPTIMS=adam,amsgrad,expectigrad
ALT=adam,amsgrad,rmsprop,adagrad,expectigrad   # the alternating quadratic: every adaptive baseline

source scripts/_sweep.sh  # sweep OVERRIDES...: one Hydra multirun with SEEDS, RESULTS, SIZE, EXTRA

if [[ "${QUICK:-0}" == 1 ]]; then
  SEEDS=${SEEDS:-0}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny models: one thread each is fastest on a shared CPU
  # 10 epochs of 505 steps (x is logged per epoch; 505 = 5 periods of the rare gradient, so every epoch ends
  # at the same phase) instead of 100 x 10000; ++ because a sweep over experiment first checks its other
  # overrides against the default task, which has no steps_per_epoch
  sweep "experiment=expectigrad/reddi,expectigrad/reddi_stochastic" "optim=$OPTIMS" task.epochs=10 \
    ++task.steps_per_epoch=505 trainer.log_every=101
  sweep experiment=expectigrad/alt_quadratic "optim=$ALT" task.epochs=2
  sweep experiment=expectigrad/mnist_mlp task=digits_mlp "optim=$OPTIMS" task.epochs=2 trainer.log_every=5 \
    +tune=lr3
else
  SEEDS=${SEEDS:-0,1,2,3,4}
  sweep "experiment=expectigrad/reddi,expectigrad/reddi_stochastic" "optim=$OPTIMS" trainer.log_every=100
  sweep experiment=expectigrad/alt_quadratic "optim=$ALT"
  for task in mnist_mlp fmnist_mlp cifar10; do
    sweep "experiment=expectigrad/$task" "optim=$OPTIMS" +tune=lr
  done
fi

python -m optbench.plot figure=expectigrad table=expectigrad results_dir="$RESULTS" plots_dir="$PLOTS"
