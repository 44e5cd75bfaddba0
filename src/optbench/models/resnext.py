"""ResNeXt-29 for CIFAR (Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", 2017) as
kuangliu/pytorch-cifar builds it (models/resnext.py), the model of YellowFin's PyTorch learning-rate decay
experiment (JianGoForIt/YellowFin_Pytorch, pytorch-cifar/main.py: ``ResNeXt29_2x64d()``).

Three stages of 3 blocks; a block is 1x1 conv -> grouped 3x3 conv (``cardinality`` groups, the stride here) ->
1x1 conv to twice the group width, each with BN, ReLU after the sum; a 1x1 conv + BN projection where the shape
changes. The group width is cardinality x bottleneck_width and doubles every stage. As in that code the stem is a
1x1 convolution to 64 channels, and every layer keeps torch's default initialisation.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

EXPANSION = 2


class ResNeXtBlock(nn.Module):
    def __init__(self, in_planes: int, cardinality: int, width: int, stride: int):
        super().__init__()
        group = cardinality * width
        out = EXPANSION * group
        self.conv1 = nn.Conv2d(in_planes, group, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(group)
        self.conv2 = nn.Conv2d(group, group, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(group)
        self.conv3 = nn.Conv2d(group, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNeXt(nn.Module):
    def __init__(self, blocks: Sequence[int] = (3, 3, 3), cardinality: int = 2, bottleneck_width: int = 64,
                 num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, in_planes, width = [], 64, bottleneck_width
        for i, n in enumerate(blocks):
            stage = []
            for j in range(n):
                stage.append(ResNeXtBlock(in_planes, cardinality, width, 2 if i > 0 and j == 0 else 1))
                in_planes = EXPANSION * cardinality * width
            stages.append(nn.Sequential(*stage))
            width *= 2
        self.stages = nn.Sequential(*stages)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))  # = avg_pool2d(8) on 32x32


def resnext29_2x64d(num_classes: int = 10, in_channels: int = 3) -> ResNeXt:
    """YellowFin_Pytorch's model (pytorch-cifar/main.py)."""
    return ResNeXt((3, 3, 3), 2, 64, num_classes, in_channels)


def resnext29_32x4d(num_classes: int = 10, in_channels: int = 3) -> ResNeXt:
    """The same code's ResNeXt29_32x4d, the thin-group variant."""
    return ResNeXt((3, 3, 3), 32, 4, num_classes, in_channels)
