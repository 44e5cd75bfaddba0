"""Image classification (MNIST, Fashion-MNIST, the sklearn digits; CIFAR plugs in via DATASETS and an
augmentation): uint8 images on the device, normalised (and augmented) per batch, cross-entropy loss,
accuracy as the extra metric."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Optional

import torch
import torch.nn.functional as F

from optbench.data.batches import check_val_split, num_batches, sequential_batches, shuffled_batches, split_train_val
from optbench.models import build_model, model_factory
from optbench.tasks.base import Task, dataset_name


@dataclass(frozen=True)
class DatasetSpec:
    """How to load a dataset and normalise it: loader(data_dir, download) -> {'train': (x, y), 'test': (x, y)}
    with x uint8 [N, H, W] or [N, H, W, C]."""

    load: Callable[[str, bool], dict]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int


def _idx(name: str):
    def load(data_dir: str, download: bool):
        from optbench.data.idx import load_idx_dataset

        return load_idx_dataset(name, data_dir, download)

    return load


def _cifar(name: str):
    def load(data_dir: str, download: bool):
        from optbench.data.cifar import load_cifar

        return load_cifar(name, data_dir, download)

    return load


def _digits(data_dir: str, download: bool):
    from optbench.data.digits import load_digits_dataset

    return load_digits_dataset()


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(_idx("MNIST"), (0.1307,), (0.3081,), 10),
    "fmnist": DatasetSpec(_idx("FashionMNIST"), (0.2860,), (0.3530,), 10),
    "digits": DatasetSpec(_digits, (0.3050,), (0.3770,), 10),
    "cifar10": DatasetSpec(_cifar("cifar10"), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), 10),
    "cifar100": DatasetSpec(_cifar("cifar100"), (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 100),
}


def _crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    from optbench.data.augment import random_crop_flip

    return random_crop_flip(x, generator, padding=4)


# augmentation name -> fn(x [B, C, H, W] uint8, generator) -> x, applied before normalisation (so a crop's
# padding is black, as in torchvision's RandomCrop on the PIL image)
AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "crop_flip": _crop_flip,  # RandomCrop(32, padding=4) + RandomHorizontalFlip
}


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    """[N, H, W] -> [N, 1, H, W]; [N, H, W, C] -> [N, C, H, W] (uint8 stays uint8)."""
    if x.dim() == 3:
        return x.unsqueeze(1)
    return x.permute(0, 3, 1, 2).contiguous()


def _model_kwargs(name: str, extra: Mapping, shape: tuple[int, ...], num_classes: int) -> dict:
    """The data-dependent sizes a model factory asks for, plus the task's model_kwargs."""
    offered = {"in_features": math.prod(shape), "in_channels": shape[0], "num_classes": num_classes}
    params = inspect.signature(model_factory(name)).parameters
    kwargs = {k: v for k, v in offered.items() if k in params}
    kwargs.update(extra)
    return kwargs


def validation_split(cfg: Mapping, held_out, test):
    """What 'val' evaluates (data.batches.check_val_split): the held-out end of the training set, or the
    official test set (the hypergradient reference trains on the whole training set and reports its validation
    loss on the test set)."""
    return test if check_val_split(cfg) == "test" else held_out


class ImageClassification(Task):
    metric_names = ("acc",)

    def __init__(self, cfg: Mapping, data_dir: str, device: torch.device):
        self.name = cfg["name"]
        spec = DATASETS[dataset_name(cfg, DATASETS)]
        data = spec.load(data_dir, bool(cfg.get("download", False)))
        self.device = device
        x_train, y_train = data["train"]
        fit, val = split_train_val(len(y_train), float(cfg["val_fraction"]))
        limit = cfg.get("train_limit")  # optional: first N training examples (quick runs)
        if limit:
            fit = slice(0, min(int(limit), fit.stop))
        self.splits = {
            "train": (x_train[fit], y_train[fit]),
            "val": validation_split(cfg, (x_train[val], y_train[val]), data["test"]),
            "test": data["test"],
        }
        self.splits = {k: (_to_nchw(x).to(device), y.to(device)) for k, (x, y) in self.splits.items()}
        channels = self.splits["train"][0].shape[1]
        mean = torch.tensor(spec.mean * (channels // len(spec.mean)), device=device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std * (channels // len(spec.std)), device=device).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), mean / std
        self.batch_size = int(cfg["batch_size"])
        self.eval_batch_size = int(cfg.get("eval_batch_size") or 1024)
        augment = cfg.get("augment")
        if augment and augment not in AUGMENTATIONS:
            raise ValueError(f"task.augment={augment!r} is not known; valid: {', '.join(sorted(AUGMENTATIONS))}")
        self.augment: Optional[Callable] = AUGMENTATIONS[augment] if augment else None
        shape = tuple(self.splits["train"][0].shape[1:])
        kwargs = _model_kwargs(cfg["model"], cfg.get("model_kwargs") or {}, shape, spec.num_classes)
        self.model = build_model(cfg["model"], **kwargs).to(device)
        self.memory_format = torch.contiguous_format

    def to_channels_last(self) -> None:
        super().to_channels_last()
        self.memory_format = torch.channels_last

    def inputs(self, x_uint8: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """uint8 -> normalised float ((x/255 - mean) / std in one fused multiply-add), augmented in training."""
        if generator is not None and self.augment is not None:
            x_uint8 = self.augment(x_uint8, generator)
        x = torch.addcmul(-self.shift, x_uint8.float(), self.scale)
        return x.contiguous(memory_format=self.memory_format)

    def steps_per_epoch(self) -> int:
        return num_batches(len(self.splits["train"][1]), self.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.splits["train"]
        for idx in shuffled_batches(len(y), self.batch_size, generator, self.device):
            yield self.inputs(x[idx], generator), y[idx]

    def loss(self, batch):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        return loss, {"acc": (logits.argmax(1) == y).float().mean()}

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        x, y = self.splits[split]
        if len(y) == 0:
            return {"loss": float("nan"), "acc": float("nan")}
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for sl in sequential_batches(len(y), self.eval_batch_size):
            logits = self.net(self.inputs(x[sl])).float()
            loss_sum += F.cross_entropy(logits, y[sl], reduction="sum")
            correct += (logits.argmax(1) == y[sl]).sum()
        n = len(y)
        return {"loss": loss_sum.item() / n, "acc": correct.item() / n}


def build(cfg: Mapping, data_dir: str, device: torch.device) -> ImageClassification:
    return ImageClassification(cfg, data_dir, device)
