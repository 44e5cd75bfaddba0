"""The pieces of a training step that are not the step itself, each small and named, so the trainer's loop reads
as forward, backward, update, log:

- ``Precision``: autocast for the forward pass (trainer.amp) and, with fp16, a gradient scaler around backward
  and the optimizer step.
- ``Sharding``: data parallelism's share of a global batch and the weight that makes the all-reduced gradient
  the global batch's (also for a last batch that does not divide evenly).
- ``EpochMeans``: per-step values summed on the device, read once per epoch.
- ``Progress``: the tqdm bar (only on a terminal, only on rank 0).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Iterator

import torch

from optbench import distributed

_log = logging.getLogger("optbench")


class Precision:
    """trainer.amp = none | bf16 | fp16."""

    def __init__(self, amp: str, device: torch.device) -> None:
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Gradients of ``loss``, unscaled (so clipping and the optimizer see true gradients)."""
        if self.scaler is None:
            loss.backward()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step; with the scaler, skipped when the scaled gradients overflowed."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class Sharding:
    """Every process draws the same global batch and trains on its contiguous slice; its loss is weighted by
    n_local * world / n_global, so DDP's average over processes is the global batch's gradient."""

    def __init__(self, ctx: distributed.Context, task: Any) -> None:
        self.ctx, self.task = ctx, task

    def share(self, batch: Any) -> tuple[Any, float | None]:
        """(this process's part of the batch, its loss weight; None without data parallelism)."""
        world = self.ctx.world_size
        if world == 1:
            return batch, None
        n_global = self.task.batch_size_of(batch)
        local = self.task.shard(batch, self.ctx.rank, world)
        return local, self.task.batch_size_of(local) * world / n_global

    def global_mean(self, local: torch.Tensor) -> torch.Tensor:
        """Mean over processes of values already weighted by ``share``: what one process would compute on the
        whole global batch."""
        if not self.ctx.enabled:
            return local
        return distributed.all_reduce_sum(self.ctx, local.clone()) / self.ctx.world_size


class EpochMeans:
    """Means of per-step values. Tensors are summed on their device (no host sync before ``means``); a key
    whose values were all the same Python number reports that number exactly (e.g. a constant lr)."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.first: dict[str, Any] = {}
        self.constant: dict[str, bool] = {}
        self.count = 0

    def state_dict(self) -> dict:
        """For a checkpoint taken mid-epoch."""
        return {"sums": dict(self.sums), "first": dict(self.first), "constant": dict(self.constant),
                "count": self.count}

    @classmethod
    def from_state(cls, state: dict | None) -> "EpochMeans":
        means = cls()
        if state:
            means.sums, means.first = dict(state["sums"]), dict(state["first"])
            means.constant, means.count = dict(state["constant"]), int(state["count"])
        return means

    def add(self, values: dict[str, Any]) -> None:
        self.count += 1
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            if key not in self.sums:
                self.sums[key], self.first[key], self.constant[key] = value, value, True
                continue
            self.sums[key] = self.sums[key] + value
            if self.constant[key] and (isinstance(value, torch.Tensor) or value != self.first[key]):
                self.constant[key] = False

    def means(self) -> dict[str, float]:
        return {key: self.first[key] if self.constant[key] and not isinstance(self.first[key], torch.Tensor)
                else to_float(total) / max(self.count, 1) for key, total in self.sums.items()}


def to_float(value: Any) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


class Progress:
    """Progress of a run: a tqdm bar per epoch on a terminal; elsewhere (a log file, a batch job) one log line per
    epoch (epoch, loss, validation metric, lr, it/s, ETA) through ``logging``, which Hydra sends to stdout."""

    def __init__(self, bar: bool, lines: bool = True) -> None:
        self.bar_enabled, self.lines = bar, lines and not bar
        self._bar = None
        self._started = time.perf_counter()
        self._steps_done = self._epochs_done = 0

    @contextlib.contextmanager
    def epoch(self, epoch: int, epochs: int, steps: int) -> Iterator["Progress"]:
        if self.bar_enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", leave=False)
        try:
            yield self
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def advance(self) -> None:
        self._steps_done += 1
        if self._bar is not None:
            self._bar.update()

    def show(self, step: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix(step=step, loss=f"{loss:.4g}")

    def epoch_done(self, epoch: int, epochs: int, row: dict, metric: str) -> None:
        """The line of a finished epoch (outside a terminal)."""
        if not self.lines:
            return
        self._epochs_done += 1
        elapsed = time.perf_counter() - self._started
        rate = self._steps_done / elapsed if elapsed > 0 else 0.0
        eta = elapsed / self._epochs_done * (epochs - epoch)
        shown = [f"{key}={row[key]:.4g}" for key in ("train_loss", "val_loss", f"val_{metric}", "lr")
                 if isinstance(row.get(key), (int, float))]
        _log.info("epoch %d/%d: %s, %.0f it/s, ETA %s", epoch, epochs, " ".join(shown), rate, _duration(eta))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
