"""Hypergradient descent (Baydin et al., ICLR 2018) and its variants as one composable optimizer.

directions.py     model optimizers: the direction d_t of p -= alpha_t d_t (SGD, SGDN, Adam, + classical momentum)
lr_optimizers.py  learning-rate optimizers: one step on the scalar alpha from the hypergradient h_t
optimizer.py      Hypergrad: the step that composes them (one global dot product, alpha on the device)
named.py          SGDHD and AdamHD with the reference signatures
"""

from optbench.optim.hypergrad.named import AdamHD, SGDHD
from optbench.optim.hypergrad.optimizer import Hypergrad

__all__ = ["Hypergrad", "SGDHD", "AdamHD"]
