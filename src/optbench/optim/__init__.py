"""Optimizers of the seed papers as drop-in ``torch.optim.Optimizer`` classes, plus the registry
that builds any of them (or a torch baseline) from an ``optim`` config."""

from optbench.optim.adamp import SGDP, AdamP
from optbench.optim.aggmo import AggMo
from optbench.optim.expectigrad import Expectigrad
from optbench.optim.hypergrad import AdamHD, Hypergrad, SGDHD
from optbench.optim.registry import ALGORITHMS, build_optimizer
from optbench.optim.yellowfin import YFOptimizer

__all__ = ["ALGORITHMS", "build_optimizer"]
__all__ += ["AggMo", "Expectigrad", "AdamP", "SGDP"]
__all__ += ["Hypergrad", "SGDHD", "AdamHD"]
__all__ += ["YFOptimizer"]
