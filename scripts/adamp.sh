#!/usr/bin/env bash
# AdamP / SGDP (Heo et al., ICLR 2021): SGD (Nesterov, SGDP's lr 0.1, the preset's coupled weight decay 1e-4) vs
# SGDP and AdamW vs AdamP on CIFAR-10 with ResNet-18 under the paper's cosine schedule, logging the weight norm and
# effective step size of the scale-invariant weights; the 2-D toy with momentum 0.9 and 0.99; with IMAGENET=1 the
# paper's ImageNet runs (ResNet-18 and ResNet-50, 100 epochs each: a GPU and <data_dir>/imagenet needed); then
# figures and table.
#   bash scripts/adamp.sh [hydra overrides...]      e.g. hydra/launcher=joblib device=cuda
# Environment: RESULTS (default results/adamp), SEEDS (default 0,1,2,3,4), PLOTS (default plots),
# QUICK=1: ResNet-20 on the digits instead of ResNet-18 on CIFAR-10, 2 epochs, 1 seed (the toy is tiny as is);
# IMAGENET=1 (not with QUICK): also ImageNet, with IMAGENET_SEEDS (default 0) seeds.
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
sweep "${IMAGES[@]}" optim=nesterov optim.lr=0.1
sweep "${IMAGES[@]}" optim=sgdp,adamw,adamp
sweep experiment=adamp/toy optim=momentum,sgdp optim.momentum=0.9,0.99
if [[ "${IMAGENET:-0}" == 1 && "${QUICK:-0}" != 1 ]]; then
  for model in resnet18 resnet50; do
    SEEDS=${IMAGENET_SEEDS:-0} sweep experiment=adamp/imagenet_$model optim=nesterov optim.lr=0.1
    SEEDS=${IMAGENET_SEEDS:-0} sweep experiment=adamp/imagenet_$model optim=sgdp,adamw,adamp
  done
fi

python -m optbench.plot figure=adamp table=adamp results_dir="$RESULTS" plots_dir="$PLOTS"
