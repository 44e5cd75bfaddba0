#!/usr/bin/env bash
# Hypergradient descent (Baydin et al., ICLR 2018) and the hypergradient variants report: SGD, SGDN and Adam,
# their HD versions and the variants (SGDop-SGDNlop, SGDNop-SGDNlop, Adamop-Adamlop) on MNIST logistic
# regression, the MNIST MLP and VGG-16 on CIFAR-10 (alpha_0 = 1e-3; beta 1e-3 for SGD/SGDN, 1e-7 for Adam,
# 1e-8 for Adam on VGG), with the report's three further combinations (SGDop-Adamlop, SGDNop-Adamlop,
# Adamop-SGDNlop); the alpha_0 sensitivity study on VGG; Baydin et al.'s alpha_0 x beta grid of the HD methods
# on logistic regression (a heatmap of iterations to a loss of 0.29); then the figures and the table.
# The presets train on the whole training set and validate on the test set, as the reference's train.py.
#   bash scripts/hypergrad.sh [hydra overrides...]      e.g. hydra/launcher=joblib device=cuda
# Environment: RESULTS (default results/hypergrad), SEEDS (default 0,1,2,3,4), PLOTS (default plots),
# QUICK=1: a miniature on the embedded digits (2 epochs, 1 seed) that runs every step in minutes on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-results/hypergrad}
PLOTS=${PLOTS:-plots}
EXTRA=("$@")
SGD_FAMILIES=sgd,sgd_hd,sgdop_sgdnlop,sgdop_adamlop,nesterov,sgdn_hd,sgdnop_sgdnlop,sgdnop_adamlop  # HD beta 1e-3
ADAM_FAMILY=adam,adam_hd,adamop_adamlop,adamop_sgdnlop                  # HD beta 1e-7 (the configs' default)
ADAM_HD=adam_hd,adamop_adamlop,adamop_sgdnlop
ALPHA0S=1e-2,5e-3,1e-3,5e-4,1e-4
BETAS=1e-2,1e-3,1e-4,1e-5            # the heatmap's beta axis for SGD-HD / SGDN-HD (Adam-HD: x 1e-4)
ADAM_BETAS=1e-6,1e-7,1e-8,1e-9

source scripts/_sweep.sh  # sweep OVERRIDES...: one Hydra multirun with SEEDS, RESULTS, SIZE, EXTRA

if [[ "${QUICK:-0}" == 1 ]]; then
  # digits logistic regression and MLP stand in for the three models, digits MLP for VGG in the alpha_0 study;
  # the presets are the paper's (only the task is swapped), so every config path is the real one
  SEEDS=${SEEDS:-0}
  SIZE=(task.epochs=2 trainer.log_every=2)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny models: one thread each is fastest on a shared CPU
  sweep experiment=hypergrad/mnist_logreg task=digits_logreg "optim=$SGD_FAMILIES,$ADAM_FAMILY"
  sweep experiment=hypergrad/mnist_mlp task=digits_mlp "optim=$SGD_FAMILIES,$ADAM_FAMILY" "optim.lr=1e-2,1e-3,1e-4"
  # the alpha_0 x beta grid, 3 x 3
  sweep experiment=hypergrad/mnist_logreg task=digits_logreg optim=sgd_hd,sgdn_hd "optim.lr=1e-1,1e-2,1e-3" \
    "optim.hypergrad_lr=1e-2,1e-3,1e-4"
  sweep experiment=hypergrad/mnist_logreg task=digits_logreg optim=adam_hd "optim.lr=1e-1,1e-2,1e-3" \
    "++optim.hypergrad_lr=1e-6,1e-7,1e-8"
else
  SEEDS=${SEEDS:-0,1,2,3,4}
  SIZE=()
  for model in mnist_logreg mnist_mlp; do
    sweep "experiment=hypergrad/$model" "optim=$SGD_FAMILIES,$ADAM_FAMILY"
  done
  # VGG: the main runs and the alpha_0 study in one grid (alpha_0 = 1e-3 is the main run)
  sweep experiment=hypergrad/cifar10_vgg "optim=$SGD_FAMILIES,adam" "optim.lr=$ALPHA0S"
  # ++: a sweep over optim checks its other overrides against the default optim (sgd) first
  sweep experiment=hypergrad/cifar10_vgg "optim=$ADAM_HD" "optim.lr=$ALPHA0S" ++optim.hypergrad_lr=1e-8
  # the alpha_0 x beta grid on logistic regression (alpha_0 = 1e-3 and the default beta are the main runs)
  sweep experiment=hypergrad/mnist_logreg optim=sgd_hd,sgdn_hd "optim.lr=$ALPHA0S" "optim.hypergrad_lr=$BETAS"
  sweep experiment=hypergrad/mnist_logreg optim=adam_hd "optim.lr=$ALPHA0S" "++optim.hypergrad_lr=$ADAM_BETAS"
fi

python -m optbench.plot "figure=[hypergrad,hypergrad_alpha0]" table=hypergrad results_dir="$RESULTS" \
  plots_dir="$PLOTS"
