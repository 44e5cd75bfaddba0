"""Optimizers of the seed papers as drop-in ``torch.optim.Optimizer`` classes, plus the registry
that builds any of them (or a torch baseline) from an ``optim`` config."""

from optbench.optim.hypergrad import AdamHD, Hypergrad, SGDHD
from optbench.optim.registry import ALGORITHMS, build_optimizer

__all__ = ["ALGORITHMS", "build_optimizer"]
__all__ += ["Hypergrad", "SGDHD", "AdamHD"]
