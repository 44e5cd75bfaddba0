"""ImageNet classification (AdamP's main setting): JPEG folders read by DataLoader workers
(optbench.data.imagenet), uint8 batches normalised on the device, torchvision ResNets, cross-entropy, accuracy.

Splits: ``train`` is the official training set (less the held-out part), ``test`` the official validation set
(the only labelled held-out set, what papers report as "ImageNet top-1"), ``val`` either the last
``val_fraction`` of each training class (``val_split: held_out``) or the test set (``val_split: test`` with
``val_fraction: 0``, the papers' protocol; the shared evaluation is then run once per epoch, not twice).

Mid-epoch resume: the epoch's order and per-image seeds come from the trainer's generator, so they are drawn
again on resume; the trainer then skips the batches it had trained on, and this task yields those as ``None``
without decoding them (``state_dict`` records how many batches of the epoch were handed out).
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F

from optbench.data import imagenet as data
from optbench.models import build_model
from optbench.tasks.base import Task
from optbench.tasks.classification import validation_split

SEED_RANGE = 2 ** 62


def worker_count(setting: Any) -> int:
    """``task.num_workers``: a number, or ``auto`` = every CPU this process may use but one (for the trainer)."""
    if setting in (None, "auto"):
        return max(len(os.sched_getaffinity(0)) - 1, 0) if hasattr(os, "sched_getaffinity") else 0
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ValueError(f"task.num_workers must be an integer >= 0 or auto, got {setting!r}")
    return setting


class ImageNetClassification(Task):
    metric_names = ("acc",)

    def __init__(self, cfg: Mapping, data_dir: str, device: torch.device):
        self.name, self.device = cfg["name"], device
        train, test = data.image_folder(data_dir, "train"), data.image_folder(data_dir, "val")
        data.check_same_classes(train, test)
        fit, held_out = data.split_per_class(train.targets, float(cfg["val_fraction"]))
        test_ids = list(range(len(train.samples), len(train.samples) + len(test.samples)))
        self.splits = {"train": fit, "val": validation_split(cfg, held_out, test_ids), "test": test_ids}
        self.batch_size = int(cfg["batch_size"])
        self.eval_batch_size = int(cfg.get("eval_batch_size") or self.batch_size)
        size = int(cfg["image_size"])
        resize = int(cfg.get("eval_resize") or round(size * 256 / 224))  # 224 -> Resize(256)
        self.batches = data.PlannedBatches()
        self.loader = data.make_loader(data.ImageNetImages(train.samples + test.samples, size, resize),
                                       self.batches, worker_count(cfg.get("num_workers")), device.type == "cuda")
        std = torch.tensor(data.STD, device=device).view(1, 3, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), torch.tensor(data.MEAN, device=device).view(1, 3, 1, 1) / std
        kwargs = {"num_classes": len(train.classes), **(cfg.get("model_kwargs") or {})}
        self.model = build_model(cfg["model"], **kwargs).to(device)
        self.memory_format = torch.contiguous_format
        self.handed_out = self.skip = 0  # batches of this epoch given to the trainer / to give as None on resume
        self.last_val: dict | None = None  # val's result, reused by test when both are the official val set

    def to_channels_last(self) -> None:
        super().to_channels_last()
        self.memory_format = torch.channels_last

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] on the device -> normalised float [B, 3, H, W] ((x/255 - mean) / std)."""
        x = torch.addcmul(-self.shift, images.permute(0, 3, 1, 2).float(), self.scale)
        return x.contiguous(memory_format=self.memory_format)

    def load(self, plan: list[list]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``plan`` (lists of (index, seed)), decoded by the workers, on the device."""
        self.batches.plan = plan
        for images, labels in self.loader:
            yield (self.inputs(images.to(self.device, non_blocking=True)),
                   labels.to(self.device, non_blocking=True))

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.splits["train"]) / self.batch_size)

    def epoch_plan(self, generator: torch.Generator) -> list[list[tuple[int, int]]]:
        """The epoch's batches: a permutation of the training images, each with its augmentation seed."""
        ids, device = self.splits["train"], generator.device
        order = torch.randperm(len(ids), generator=generator, device=device).tolist()
        seeds = torch.randint(0, SEED_RANGE, (len(ids),), generator=generator, device=device).tolist()
        items = [(ids[k], seed) for k, seed in zip(order, seeds)]
        return [items[start:start + self.batch_size] for start in range(0, len(items), self.batch_size)]

    def train_batches(self, generator: torch.Generator) -> Iterator[Any]:
        plan, skip = self.epoch_plan(generator), self.skip
        self.skip, self.handed_out, self.last_val = 0, skip, None
        for _ in range(skip):  # trained on before the interruption: the trainer skips them
            yield None
        for batch in self.load(plan[skip:]):
            self.handed_out += 1
            yield batch

    def start_epoch(self) -> None:
        self.skip = self.handed_out = 0

    def state_dict(self) -> dict[str, Any]:
        return {"batches_handed_out": self.handed_out}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skip = self.handed_out = int(state.get("batches_handed_out", 0))

    def loss(self, batch):
        x, y = batch
        self.last_val = None  # the weights are about to change
        logits = self.net(x)
        return F.cross_entropy(logits, y), {"acc": (logits.argmax(1) == y).float().mean()}

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        ids = self.splits[split]
        if split == "test" and ids is self.splits["val"] and self.last_val is not None:
            result, self.last_val = self.last_val, None
            return result
        result = self.evaluate_images(ids)
        self.last_val = dict(result) if split == "val" else None
        return result

    def evaluate_images(self, ids: list[int]) -> dict[str, float]:
        if not ids:
            return {"loss": float("nan"), "acc": float("nan")}
        items = [(i, None) for i in ids]
        plan = [items[start:start + self.eval_batch_size] for start in range(0, len(items), self.eval_batch_size)]
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for x, y in self.load(plan):
            logits = self.net(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        return {"loss": loss_sum.item() / len(ids), "acc": correct.item() / len(ids)}


def build(cfg: Mapping, data_dir: str, device: torch.device) -> ImageNetClassification:
    return ImageNetClassification(cfg, data_dir, device)
