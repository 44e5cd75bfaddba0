"""AggMo's deep autoencoder 784-1000-500-250-30-250-500-1000-784 (Hinton & Salakhutdinov's MNIST
architecture with ReLUs): ReLU hidden layers, a linear 30-unit code, a sigmoid output.

``forward`` returns the output layer's logits; the task applies the sigmoid inside a binary cross-entropy with
logits, the same loss as sigmoid followed by BCE but without its log(0) clamping.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _stack(widths: Sequence[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DeepAutoencoder(nn.Module):
    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (1000, 500, 250, 30)):
        super().__init__()
        widths = [in_features, *hidden]
        self.encoder = _stack(widths, last_activation=False)  # linear code
        self.decoder = _stack(widths[::-1], last_activation=False)  # logits of the reconstruction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(torch.flatten(x, 1)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))


def deep_autoencoder(in_features: int = 784, hidden: Sequence[int] = (1000, 500, 250, 30)) -> DeepAutoencoder:
    return DeepAutoencoder(in_features, tuple(hidden))
