"""Pre-activation CIFAR ResNets of the YellowFin CIFAR runs (BN and activation before each convolution, the sum
left unactivated, a last BN-activation before the global average pool), in the two forms the YellowFin sources
name:

- ``resnet164``: He et al.'s ResNet-164 ("Identity Mappings in Deep Residual Networks", 2016), the model the
  YellowFin paper reports on CIFAR-100: 18 bottleneck units per stage, outputs 64-128-256 (bottlenecks
  16-32-64) after a 3x3 stem of 16, ReLU. As the authors' code builds it (KaimingHe/resnet-1k-layers,
  resnet-pre-act.lua): the stride sits on a unit's first 1x1 convolution, a unit that changes the shape shares
  its BN-ReLU with a 1x1 projection shortcut (no BN on the shortcut), convolutions drawn from
  N(0, 2 / (k * k * out_channels)), the classifier's bias zero.
- ``resnet_tf`` / ``resnet_tf_bottleneck``: TensorFlow's CIFAR ResNet as the YellowFin release scripts build it
  (JianGoForIt/YellowFin, cifar/model/resnet_model.py with CIFAR10-release.py / CIFAR100-release.py's
  hyperparameters): 5 residual units per stage, leaky ReLU with slope 0.1, batch-norm epsilon 1e-3; basic units
  (two 3x3 convolutions, outputs 16-32-64; 5 units = 32 layers) whose shape change is bypassed by a 2x2 average
  pool and zero-padded channels, or bottleneck units (outputs 64-128-256, a 1x1 projection shortcut; 47
  layers). Only the very first unit shares its pre-activation with the shortcut (``activate_before_residual``);
  the other stages' first units bypass the raw input. Convolutions N(0, 2 / (k * k * out_channels)), the
  classifier uniform(+-sqrt(3 / fan_in)) (``uniform_unit_scaling_initializer``) with a zero bias.

Left out of the TensorFlow model: its weight decay covers the convolution and classifier weights only (here the
task's weight_decay covers every parameter), and its input pipeline standardises each image by itself.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SHARE = ("reshaping", "first")  # which units share their pre-activation with the shortcut


class PoolPadShortcut(nn.Module):
    """TensorFlow ResNet's basic-unit bypass when the shape changes: average-pool stride x stride, then zero
    channels on both sides (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride)
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def _shortcut(in_planes: int, planes: int, stride: int, bottleneck: bool) -> nn.Module:
    if in_planes == planes and stride == 1:
        return nn.Identity()
    if bottleneck:  # both sources project with a bare 1x1 convolution
        return nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
    return PoolPadShortcut(in_planes, planes, stride)


class PreActUnit(nn.Module):
    """BN-act-conv (x2 basic, x3 bottleneck) plus the shortcut. ``shared``: the shortcut takes the
    pre-activated input (the first BN-act is common to both branches) instead of the raw one."""

    def __init__(self, in_planes: int, planes: int, stride: int, bottleneck: bool, shared: bool,
                 leak: float, eps: float):
        super().__init__()
        if bottleneck:
            mid = planes // 4
            shapes = [(in_planes, mid, 1), (mid, mid, 3), (mid, planes, 1)]
        else:
            shapes = [(in_planes, planes, 3), (planes, planes, 3)]
        self.bns = nn.ModuleList(nn.BatchNorm2d(c_in, eps=eps) for c_in, _, _ in shapes)
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, k, stride=stride if i == 0 else 1, padding=k // 2,
                                             bias=False) for i, (c_in, c_out, k) in enumerate(shapes))
        self.shortcut = _shortcut(in_planes, planes, stride, bottleneck)
        self.shared, self.leak = shared, leak

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.leaky_relu(self.bns[0](x), self.leak)
        out = self.convs[0](pre)
        for bn, conv in zip(self.bns[1:], self.convs[1:]):
            out = conv(F.leaky_relu(bn(out), self.leak))
        return out + self.shortcut(pre if self.shared else x)


class PreActResNet(nn.Module):
    """A 3x3 stem of ``widths[0]`` channels, then ``units`` residual units per stage with outputs ``widths[1:]``
    (the first unit of stages 2 and 3 halves the resolution), BN-act, global average pool, linear.
    ``share``: "reshaping" (every unit that changes the shape shares its pre-activation with the shortcut, He et
    al.) or "first" (only the network's first unit, TensorFlow's ``activate_before_residual``).
    ``tf_linear_init``: TensorFlow's uniform(+-sqrt(3 / fan_in)) classifier instead of torch's default."""

    def __init__(self, units: int, widths: Sequence[int], bottleneck: bool, num_classes: int = 10,
                 in_channels: int = 3, leak: float = 0.0, eps: float = 1e-5, share: str = "reshaping",
                 tf_linear_init: bool = False):
        super().__init__()
        if units < 1 or len(widths) != 4:
            raise ValueError(f"units={units} must be >= 1 and widths={list(widths)} [stem, 3 stage outputs]")
        if share not in SHARE:
            raise ValueError(f"share={share!r}; valid: {', '.join(SHARE)}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        blocks, in_planes = [], widths[0]
        for stage, planes in enumerate(widths[1:]):
            for i in range(units):
                stride = 2 if stage > 0 and i == 0 else 1
                reshapes = stride != 1 or in_planes != planes
                shared = reshapes if share == "reshaping" else (stage == 0 and i == 0)
                blocks.append(PreActUnit(in_planes, planes, stride, bottleneck, shared, leak, eps))
                in_planes = planes
        self.units = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes, eps=eps)
        self.linear = nn.Linear(in_planes, num_classes)
        self.leak = leak
        _initialise(self, tf_linear_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.units(self.conv1(x))
        out = F.leaky_relu(self.bn(out), self.leak)
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def _initialise(model: nn.Module, tf_linear_init: bool) -> None:
    """Both sources: convolutions N(0, 2 / (k * k * out_channels)) (He et al.'s fan-out rule), the
    classifier's bias zero; TensorFlow's classifier weight uniform(+-sqrt(3 / fan_in))."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
            if tf_linear_init:
                bound = math.sqrt(3.0 / m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)


def preact_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    """He et al.'s pre-activation bottleneck ResNet of depth 9n + 2 (164, 1001)."""
    if depth < 11 or (depth - 2) % 9:
        raise ValueError(f"depth={depth}: a pre-activation bottleneck ResNet has depth 9n + 2 (164, 1001)")
    return PreActResNet((depth - 2) // 9, (16, 64, 128, 256), True, num_classes, in_channels)


def resnet164(num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    return preact_resnet(164, num_classes, in_channels)


def resnet_tf(num_classes: int = 10, in_channels: int = 3, units: int = 5, bottleneck: bool = False,
              leak: float = 0.1) -> PreActResNet:
    """The YellowFin TensorFlow release's ResNet (CIFAR10-release.py: 5 basic units, leaky ReLU 0.1)."""
    widths = (16, 64, 128, 256) if bottleneck else (16, 16, 32, 64)
    return PreActResNet(units, widths, bottleneck, num_classes, in_channels, leak=leak, eps=1e-3, share="first",
                        tf_linear_init=True)


def resnet_tf_bottleneck(num_classes: int = 10, in_channels: int = 3, units: int = 5,
                         leak: float = 0.1) -> PreActResNet:
    """CIFAR100-release.py's model: the same with bottleneck units (use_bottleneck=True)."""
    return resnet_tf(num_classes, in_channels, units, True, leak)
