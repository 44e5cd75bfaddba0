"""Find the scale-invariant weights of a model: AdamP's central plot is their norm over training.

A convolution or linear layer whose output goes straight into a normalisation layer computes the same function
when its weight is multiplied by any c > 0, so its loss is invariant to the weight's scale and its gradient is
orthogonal to the weight. Momentum then makes the norm of such weights grow (Heo et al., ICLR 2021).

Heuristic, documented: "followed by" means the next leaf module in registration order (``named_modules()``),
which is how ResNet, VGG-BN and most CNNs register conv -> norm. Models that apply a norm through the functional
API, reuse modules, or register them out of order are not detected; pass their weights explicitly instead.
"""

from __future__ import annotations

from torch import nn

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def scale_invariant_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(qualified name, weight) of every conv/linear weight directly followed by a normalisation layer."""
    leaves = [(name, m) for name, m in model.named_modules() if not any(True for _ in m.children())]
    found = []
    for (name, module), (_, following) in zip(leaves, leaves[1:]):
        if isinstance(module, WEIGHT_LAYERS) and isinstance(following, NORM_LAYERS):
            found.append((f"{name}.weight" if name else "weight", module.weight))
    return found
