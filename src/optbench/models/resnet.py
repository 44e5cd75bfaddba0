"""CIFAR ResNets (32x32 inputs): a 3x3 stride-1 stem, no max-pool, BasicBlock stages, global average pool.

Two families share one class, differing only in widths and in how a block that changes shape is bypassed:

- AggMo's ResNet-18/34 (the kuangliu/pytorch-cifar variant): widths 64-128-256-512, stages [2,2,2,2] /
  [3,4,6,3], a 1x1 conv + BN projection shortcut where the shape changes ("projection").
- He et al.'s deep thin CIFAR ResNets (ResNet-20/32/56/110, depth 6n+2): widths 16-32-64, n blocks per stage,
  parameter-free shortcuts that subsample and zero-pad the channels ("option A" of the paper, "pad").

Global average pooling over the final 4x4 (or 8x8) map equals the papers' fixed-size average pool on 32x32
inputs and also accepts other input sizes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUTS = ("projection", "pad")


class PadShortcut(nn.Module):
    """He et al.'s option A: take every other pixel and append zero channels; no parameters."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "projection":
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))
        else:
            self.shortcut = PadShortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks: Sequence[int], widths: Sequence[int], num_classes: int = 10,
                 in_channels: int = 3, shortcut: str = "projection", he_init: bool = False):
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"blocks {list(blocks)} and widths {list(widths)} must have the same length")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut={shortcut!r}; valid: {', '.join(SHORTCUTS)}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_planes = [], widths[0]
        for i, (n, planes) in enumerate(zip(blocks, widths)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            stage = []
            for stride in strides:
                stage.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.linear = nn.Linear(in_planes, num_classes)
        if he_init:  # He et al.'s N(0, 2 / fan_in) convolutions; otherwise torch's defaults, as AggMo's code
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stages(out)
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


def resnet18(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels, "projection")


def resnet34(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet([3, 4, 6, 3], [64, 128, 256, 512], num_classes, in_channels, "projection")


def thin_resnet(depth: int, num_classes: int = 10, in_channels: int = 3, shortcut: str = "pad") -> CifarResNet:
    """He et al.'s CIFAR ResNet of depth 6n + 2 (20, 32, 44, 56, 110, ...)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth={depth}: a thin CIFAR ResNet has depth 6n + 2 with n >= 1 (20, 32, 56, 110)")
    n = (depth - 2) // 6
    return CifarResNet([n, n, n], [16, 32, 64], num_classes, in_channels, shortcut, he_init=True)


def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "pad") -> CifarResNet:
    return thin_resnet(20, num_classes, in_channels, shortcut)


def resnet32(num_classes: int = 10, in_channels: int = 3, shortcut: str = "pad") -> CifarResNet:
    return thin_resnet(32, num_classes, in_channels, shortcut)


def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: str = "pad") -> CifarResNet:
    return thin_resnet(56, num_classes, in_channels, shortcut)


def resnet110(num_classes: int = 10, in_channels: int = 3, shortcut: str = "pad") -> CifarResNet:
    return thin_resnet(110, num_classes, in_channels, shortcut)
