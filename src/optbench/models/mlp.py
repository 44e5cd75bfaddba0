"""Fully connected classifiers of the hypergradient paper: logistic regression (784 -> 10) and the
784-1000-1000-10 ReLU MLP; sizes are arguments so the 8x8 digits use the same code."""

from __future__ import annotations

from typing import Sequence

from torch import nn


def logistic_regression(in_features: int = 784, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))


def mlp(in_features: int = 784, num_classes: int = 10, hidden: Sequence[int] = (1000, 1000)) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
