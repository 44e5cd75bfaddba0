"""One training epoch of ResNet-18 on CIFAR-sized data, three ways in one process, with the speed options off and
on: optbench (the cifar10 task through optbench.train's Trainer: the data live on the device, augmentation runs
batched there), a bare PyTorch loop fed by torchvision's DataLoader (RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize, 2 workers), and the bare model alone on batches already on the device
(no data pipeline at all: the ceiling). Same model initialisation, optimizer (SGD momentum) and batch size.
Prints images/s and the ratios: optbench's training epoch vs the DataLoader loop (GPU goal >= 2x) and vs the bare
model (GPU goal: within 10%), and each loop with the options on vs off.

    python benchmarks/epoch.py [--images 2048] [--batch-size 128] [--workers 2] [--repeats 1] [--device cpu]
                              [--model resnet18] [--fast amp,channels_last,compile] [--warmup 1] [--threads N]

--fast names the options of the second configuration: amp (bf16 autocast; trainer.amp=bf16), channels_last
(trainer.channels_last) and compile (trainer.compile: torch.compile of the model); --fast "" measures only the
plain configuration (the default on the CPU, where compiling ResNet-18 takes minutes). On a CPU use a subset (--images 2048 takes a few minutes per side on 2 cores); on a GPU a
multiple of the batch size (no smaller last batch, which torch.compile would compile again), e.g. --images 25600
or 49920. The data are random CIFAR-10 pickles in the official format, written to a temporary directory.

The optbench side is a whole 1-epoch fit() (training epoch, evaluation of the validation split, which is the
test split of one batch, and the checkpoint) after ``--warmup`` untimed epochs (the epoch-0 evaluation, torch.compile's
compilation, cuDNN's first calls); the bare loops do only the training steps, after ``--warmup`` x 8 untimed
steps of the bare model. Each row is printed as soon as it is measured, so a run cut off still reports. Every
batch, training and evaluation, has the same size, so torch.compile compiles one graph for each.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import compose, write_mini_cifar  # noqa: E402
from data_pipeline import MEAN, STD, PilCifar  # noqa: E402

from _timing import time_trainer, timed  # noqa: E402

from optbench.tasks import build_task  # noqa: E402
from optbench.run_config import optimizer_config  # noqa: E402

OPTIONS = ("amp", "channels_last", "compile")


class Bare:
    """The bare loops' model, optimizer and speed options (the same module the Trainer trains)."""

    def __init__(self, model: torch.nn.Module, optim_cfg: dict, options: set, device: torch.device):
        self.device, self.options = device, options
        self.memory_format = torch.channels_last if "channels_last" in options else torch.contiguous_format
        model.to(memory_format=self.memory_format)
        self.model = torch.compile(model) if "compile" in options else model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=optim_cfg["lr"], momentum=optim_cfg["momentum"],
                                         weight_decay=optim_cfg["weight_decay"])

    def autocast(self):
        if "amp" not in self.options:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            loss = F.cross_entropy(self.model(x.contiguous(memory_format=self.memory_format)), y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def loader_epoch(self, images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int) -> int:
        """One epoch fed by torchvision's DataLoader; returns the number of steps."""
        from torchvision import transforms

        transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                        transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        loader = torch.utils.data.DataLoader(PilCifar(images, labels, transform), batch_size=batch_size,
                                             shuffle=True, num_workers=workers,
                                             pin_memory=self.device.type == "cuda")
        self.model.train()
        steps = 0
        for x, y in loader:
            loss = self.step(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            steps += 1
        loss.item()
        return steps

    def model_epoch(self, batches: list, steps: int) -> int:
        """``steps`` steps cycling over batches already on the device (no data pipeline)."""
        self.model.train()
        loss = None
        for i in range(steps):
            loss = self.step(*batches[i % len(batches)])
        if loss is not None:
            loss.item()
        return steps


def device_batches(task, batch_size: int, count: int) -> list:
    """The first ``count`` training batches, normalised (not augmented), on the device."""
    x_train, y_train = task.splits["train"]
    out = []
    for i in range(count):
        x, y = x_train[i * batch_size:(i + 1) * batch_size], y_train[i * batch_size:(i + 1) * batch_size]
        if len(y) < batch_size:
            break
        out.append((task.inputs(x), y))
    return out


class Report:
    """Rows printed as they come, then the ratios."""

    def __init__(self, images: int):
        self.images, self.seconds = images, {}
        print("| loop | options | median s | images/s |")
        print("|---|---|---|---|")

    def row(self, loop: str, options: str, times: list[float]) -> None:
        median = statistics.median(times)
        self.seconds[loop, options] = median
        print(f"| {loop} | {options} | {median:.3f} | {self.images / median:.0f} |", flush=True)

    def ratio(self, text: str, a: tuple, b: tuple, goal: str = "") -> None:
        if a in self.seconds and b in self.seconds:
            print(f"{text}: {self.seconds[b] / self.seconds[a]:.2f}x{goal}", flush=True)


def measure(args, cfg: dict, task, initial: dict, options: set, tmp: str, report: Report) -> None:
    """One configuration: optbench, the DataLoader loop and the bare model, ``--repeats`` times each."""
    name = "+".join(o for o in OPTIONS if o in options) or "none"
    device = torch.device(args.device)
    x_train, y_train = task.splits["train"]
    images = x_train.permute(0, 2, 3, 1).cpu().numpy()  # the same images, NHWC for PIL
    labels = y_train.cpu().numpy()
    times = {"optbench fit()": [], "optbench training epoch": [], "bare loop + DataLoader": [], "bare model": []}
    for repeat in range(args.repeats):
        task.model.load_state_dict(initial)
        t_fit, t_epoch, trainer = time_trainer(cfg, task, Path(tmp) / f"run-{name}-{repeat}", device, epochs=1,
                                               warmup_epochs=args.warmup)
        times["optbench fit()"].append(t_fit)
        times["optbench training epoch"].append(t_epoch)
        steps = trainer.step // (args.warmup + 1)
        task.model.load_state_dict(initial)
        bare = Bare(task.model, optimizer_config(cfg), options, device)
        batches = device_batches(task, args.batch_size, min(steps, 16))
        bare.model_epoch(batches, 8 * args.warmup)  # untimed: compilation, cuDNN's first calls
        task.model.load_state_dict(initial)
        try:
            t_loader, loader_steps = timed(lambda: bare.loader_epoch(images, labels, args.batch_size, args.workers),
                                           device)
            times["bare loop + DataLoader"].append(t_loader)
            if loader_steps != steps:
                print(f"warning: DataLoader epoch took {loader_steps} steps, optbench {steps}")
        except Exception as exc:  # e.g. no shared memory for the workers: the other loops still report
            print(f"bare loop + DataLoader failed: {type(exc).__name__}: {exc}")
        task.model.load_state_dict(initial)
        t_model, _ = timed(lambda: bare.model_epoch(batches, steps), device)
        times["bare model"].append(t_model)
    for loop, values in times.items():
        if values:
            report.row(loop, name, values)
    report.ratio(f"speed-up, optbench training epoch vs bare loop + DataLoader ({name})",
                 ("optbench training epoch", name), ("bare loop + DataLoader", name), " (GPU goal >= 2x)")
    report.ratio(f"time ratio, optbench training epoch / bare model ({name})",
                 ("bare model", name), ("optbench training epoch", name), " (GPU goal <= 1.10x)")


def setup(args, tmp: str) -> tuple[dict, object, dict]:
    write_mini_cifar(Path(tmp), "cifar10", per_file=-(-args.images // 5), n_test=args.batch_size)
    torch.manual_seed(0)
    cfg = config(args, tmp, set())
    task = build_task(cfg["task"], tmp, torch.device(args.device))
    return cfg, task, copy.deepcopy(task.model.state_dict())


def config(args, tmp: str, options: set) -> dict:
    from omegaconf import OmegaConf

    cfg = compose("task=cifar10", f"task.model={args.model}", "optim=momentum", "task.epochs=1",
                  f"task.batch_size={args.batch_size}", f"++task.eval_batch_size={args.batch_size}",
                  "task.val_fraction=0", "++task.val_split=test", f"++task.train_limit={args.images}",
                  f"data_dir={tmp}", f"results_dir={tmp}/results", f"device={args.device}",
                  f"trainer.amp={'bf16' if 'amp' in options else 'none'}",
                  f"trainer.channels_last={'channels_last' in options}", f"trainer.compile={'compile' in options}")
    return OmegaConf.to_container(cfg, resolve=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048, help="training images (random CIFAR-10 data)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet18", help="task.model (resnet20 for a quick check)")
    parser.add_argument("--fast", default=None,
                        help="comma-separated options of the second configuration ('' for none; default: "
                             "amp,channels_last,compile on a GPU, none on the CPU)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs before the timed one")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: torch's); 1 avoids OpenMP stalls on a busy shared CPU")
    args = parser.parse_args()
    if args.fast is None:
        args.fast = "amp,channels_last,compile" if args.device.startswith("cuda") else ""
    fast = {o for o in args.fast.split(",") if o}
    if fast - set(OPTIONS):
        parser.error(f"--fast: unknown {sorted(fast - set(OPTIONS))}; choose from {', '.join(OPTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, task, initial = setup(args, tmp)
        images = len(task.splits["train"][1])
        print(f"device={args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}) "
              f"threads={torch.get_num_threads()} torch={torch.__version__} images={images} model={args.model} "
              f"batch={args.batch_size} SGD momentum, DataLoader workers={args.workers}, warmup={args.warmup}",
              flush=True)
        report = Report(images)
        for options in [set()] + ([fast] if fast else []):  # the fast one last: its changes to the model stay
            measure(args, config(args, tmp, options), task, initial, options, tmp, report)
    name = "+".join(o for o in OPTIONS if o in fast)
    for loop in ("optbench training epoch", "bare loop + DataLoader", "bare model") if fast else ():
        report.ratio(f"speed-up of {name} on vs off, {loop}", (loop, name), (loop, "none"))


if __name__ == "__main__":
    main()
