"""torchvision's ImageNet ResNets (He et al., 2016), randomly initialised, as the AdamP paper trains them: the
7x7 stride-2 stem, max pooling and the standard blocks for 224 x 224 inputs (``resnet18`` / ``resnet34`` in
optbench.models.resnet are the 3x3-stem CIFAR versions). Every convolution is followed by batch norm, so all
of them are scale-invariant; the fully connected head is not."""

from __future__ import annotations

from torch import nn


def torchvision_resnet18(num_classes: int = 1000) -> nn.Module:
    """torchvision.models.resnet18(weights=None): 11,689,512 parameters for 1000 classes."""
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=num_classes)


def torchvision_resnet50(num_classes: int = 1000) -> nn.Module:
    """torchvision.models.resnet50(weights=None): 25,557,032 parameters for 1000 classes."""
    from torchvision.models import resnet50

    return resnet50(weights=None, num_classes=num_classes)
