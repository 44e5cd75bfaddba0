"""The two tensor primitives the hypergradient family adds to an ordinary optimizer step, written so they never
wait for the device: the learning rate is a 0-dim tensor, not a Python float.
"""

from __future__ import annotations

from typing import Sequence

import torch

# 16-bit parameters are updated through float32 working copies with float32 state: a bfloat16 EMA cannot
# represent a decay such as 0.999, and the hypergradient needs more than 3 significant digits.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def alpha_dtype(device: torch.device) -> torch.dtype:
    """alpha and h are float64 like the reference's Python float (beta * h is often 1e-6 of alpha); MPS has
    no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> over all elements, as a 0-dim tensor on the device (no host sync)."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


def add_scaled_(params: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor],
                scales: Sequence[torch.Tensor]) -> None:
    """p += s * t for each (p, t, s); every s is a 0-dim tensor of the params' dtype and device.

    On the CPU one broadcasting addcmul per tensor reads p and t once. Elsewhere a shared s goes through the
    fused multi-tensor kernels (mul, then add); distinct scales fall back to per-tensor kernels.
    """
    if params[0].device.type != "cpu" and all(s is scales[0] for s in scales):
        torch._foreach_add_(params, torch._foreach_mul(tensors, scales[0]))
    else:
        torch._foreach_addcmul_(params, tensors, scales)
