"""What the trainer needs from a task: batches for one epoch, a training loss, an evaluation.

A task owns its data (already on the training device), its model and its loss, so the trainer stays one
short loop that knows nothing about images, text or synthetic objectives.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch import nn


def dataset_name(cfg: Any, datasets: Any) -> str:
    """``task.dataset``, checked against the datasets a task kind knows."""
    name = cfg["dataset"]
    if name not in datasets:
        raise ValueError(f"task.dataset={name!r} is not known for task.kind={cfg.get('kind')!r}; valid: "
                         f"{', '.join(sorted(datasets))}")
    return name


class Task:
    """Base class. Subclasses set ``model`` and ``metric_names`` and implement the three methods.

    ``metric_names``: what ``evaluate`` returns besides ``loss`` (e.g. ``("acc",)``); the trainer logs
    ``{split}_{metric}`` columns for split in train/val/test.

    ``model`` is the plain module whose state is saved; forward passes go through ``net``, which is ``model``
    unless the trainer asked for a wrapper (torch.compile, DistributedDataParallel) through ``wrap_model``.
    """

    name: str
    model: nn.Module
    metric_names: tuple[str, ...] = ()
    #: the validation metric that picks best.pth; the trainer keeps the epoch where it is smallest
    best_metric: str = "loss"
    _wrapped: nn.Module | None = None

    @property
    def net(self) -> nn.Module:
        """The module forward passes run through."""
        return self.model if self._wrapped is None else self._wrapped

    def wrap_model(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Run forward passes through ``wrap(net)`` from now on; ``model`` stays the plain module."""
        self._wrapped = wrap(self.net)

    def to_channels_last(self) -> None:
        """trainer.channels_last: NHWC weights (image tasks also feed NHWC inputs)."""
        self.model.to(memory_format=torch.channels_last)

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def train_batches(self, generator: torch.Generator) -> Iterator[Any]:
        """Yield the batches of one training epoch; randomness (shuffle, augmentation) only from generator."""
        raise NotImplementedError

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training forward pass: the scalar loss to backpropagate and per-batch metric tensors
        (e.g. {"acc": fraction correct}) that the trainer averages into the epoch's train_* columns."""
        raise NotImplementedError

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics of the current model on 'train', 'val' or 'test': {"loss": ..., **metric_names}."""
        raise NotImplementedError

    def shard(self, batch: Any, rank: int, world_size: int) -> Any:
        """This process's part of a global batch in data-parallel training: a contiguous slice along the
        example dimension of every tensor (override when examples are not the first dimension)."""
        return tuple(t.tensor_split(world_size)[rank] for t in batch)

    def batch_size_of(self, batch: Any) -> int:
        """Number of examples in a batch (weights each process's loss in data-parallel training)."""
        return len(batch[0])

    def start_epoch(self) -> None:
        """Hook at the start of each training epoch (e.g. reset a language model's hidden state)."""

    def after_step(self) -> None:
        """Hook after each optimizer step (e.g. project onto a constraint set)."""

    def extras(self) -> dict[str, float]:
        """Task quantities logged per epoch besides the metrics (e.g. the iterate x of a 1-D problem)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Task state beyond the model that a resumed run needs (e.g. an online problem's step counter).
        Saved in checkpoint.pth, so it must hold only tensors, numbers, strings, lists and dicts."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""
