"""VGG-16 with batch norm for 32x32 inputs, as in the hypergradient paper's CIFAR-10 runs: conv config "D"
(conv 3x3 with bias -> BN -> ReLU, max-pool after each of the five stages, leaving 512 x 1 x 1) and the small
classifier Dropout-512-ReLU-Dropout-512-ReLU-classes (15,253,578 parameters for 10 classes)."""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

VGG16: tuple[Union[int, str], ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                       512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, config: Sequence[Union[int, str]] = VGG16, num_classes: int = 10, in_channels: int = 3,
                 hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(width, int(item), 3, padding=1), nn.BatchNorm2d(int(item)), nn.ReLU(inplace=True)]
                width = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        # the reference code's He initialisation of the convolutions (normal, std sqrt(2 / fan_out)), zero biases
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16_bn(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    return VGG(VGG16, num_classes, in_channels, dropout=dropout)
