"""What the optbench-vs-bare-loop benchmarks share: device sync, timing the Trainer's epochs the same way
(epoch-0 evaluation untimed), and the results table with the median ratios."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from optbench.optim import build_optimizer
from optbench.run_config import optimizer_config
from optbench.train import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """(wall seconds, result) of fn(), with the device's queued work included."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def time_trainer(cfg: dict, task, run_dir: Path, device: torch.device, epochs: int, warmup_epochs: int = 0
                 ) -> tuple[float, float, Trainer]:
    """Train ``epochs`` epochs through optbench's Trainer: (whole fit() seconds, training-only seconds, trainer).
    The epoch-0 evaluation, the first checkpoint and ``warmup_epochs`` untimed epochs (torch.compile's
    compilation, cuDNN's first calls) run before the clock starts."""
    run_dir.mkdir(parents=True)
    trainer = Trainer(cfg, task, build_optimizer(task.model.parameters(), optimizer_config(cfg)), run_dir, device)
    trainer.epochs = warmup_epochs
    trainer.fit()
    before = trainer.train_time
    trainer.epochs = warmup_epochs + epochs
    seconds, _ = timed(trainer.fit, device)
    return seconds, trainer.train_time - before, trainer


def print_comparison(rows: Sequence[tuple[str, Sequence[float]]], amount: float, unit: str,
                     ratios: Sequence[tuple[str, Sequence[float]]], goal: str) -> None:
    """Markdown table of median seconds and ``amount / seconds`` (e.g. tokens/s), then each median ratio."""
    print(f"| loop | median s | {unit}/s |")
    print("|---|---|---|")
    for name, times in rows:
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} | {amount / median:.0f} |")
    for what, values in ratios:
        ratio = statistics.median(values)
        print(f"time ratio, optbench {what} / bare (median of {len(values)}): {ratio:.3f} -> "
              f"{100 * (ratio - 1):+.1f}% ({goal})")
