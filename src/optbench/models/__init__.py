"""Model zoo of the seed papers, built by name: ``build_model("resnet34", num_classes=10)``."""

from __future__ import annotations

from typing import Callable

from torch import nn

from optbench.registry import Registry

MODELS = Registry("task.model", "optbench.models", {
    "logreg": "mlp:logistic_regression",
    "mlp": "mlp:mlp",
    "resnet18": "resnet:resnet18",
    "resnet34": "resnet:resnet34",
    "resnet20": "resnet:resnet20",
    "resnet32": "resnet:resnet32",
    "resnet56": "resnet:resnet56",
    "resnet110": "resnet:resnet110",
    # YellowFin: pre-activation ResNet-164, the TF release scripts' ResNets (5 units per stage, leaky ReLU 0.1),
    # ResNeXt-29 of the PyTorch lr-decay runs
    "resnet164": "preact_resnet:resnet164",
    "resnet_tf": "preact_resnet:resnet_tf",
    "resnet_tf_bottleneck": "preact_resnet:resnet_tf_bottleneck",
    "resnext29_2x64d": "resnext:resnext29_2x64d",
    "resnext29_32x4d": "resnext:resnext29_32x4d",
    "torchvision_resnet18": "torchvision_resnet:torchvision_resnet18",  # ImageNet (AdamP)
    "torchvision_resnet50": "torchvision_resnet:torchvision_resnet50",
    "vgg16_bn": "vgg:vgg16_bn",
    "deep_autoencoder": "autoencoder:deep_autoencoder",
    "lstm_lm": "lstm:lstm_lm",
    "awd_lstm": "awd_lstm:awd_lstm",
})


def model_names() -> list[str]:
    return MODELS.names()


def model_factory(name: str) -> Callable[..., nn.Module]:
    return MODELS.get(name)


def build_model(name: str, **kwargs) -> nn.Module:
    return model_factory(name)(**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
