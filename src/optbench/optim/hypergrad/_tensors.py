"""Two primitives the hypergradient family adds to an ordinary optimizer step, written so they never
wait for the device: the learning rate is a 0-dim tensor, not a Python float.
"""

from __future__ import annotations

import torch


def alpha_dtype(device: torch.device) -> torch.dtype:
    """alpha and h are float64 like the reference's Python float (beta * h is often 1e-6 of alpha); MPS has
    no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> over all elements, as a 0-dim tensor on the device (no host sync)."""
    return torch.dot(a.reshape(-1), b.reshape(-1))
