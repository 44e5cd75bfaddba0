"""Trainer overhead: optbench's Trainer vs a bare hand-written PyTorch loop, same model, data, optimizer and
number of steps, in one process. Goal: under 5% on the MNIST MLP task on CPU (logging every 10 steps,
checkpoint every epoch).

    python benchmarks/trainer_overhead.py [--epochs 3] [--train 12800] [--repeats 3] [--device cpu]

The data are random MNIST-format IDX files (so no download is needed), 784-1000-1000-10 MLP, SGD momentum,
batch 128. The trainer side includes its per-epoch CSV rows, steps.csv rows, checkpoint.pth and a small
val/test evaluation; the bare loop does only the steps.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import compose, write_mini_mnist  # noqa: E402

from _timing import time_trainer, timed  # noqa: E402

from optbench.tasks import build_task  # noqa: E402


def bare_loop(model, x_uint8, y, epochs, batch_size, lr, momentum, weight_decay, generator, device):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    mean, std = 0.1307, 0.3081
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=generator, device=device)
        for start in range(0, len(y), batch_size):
            idx = perm[start:start + batch_size]
            x = (x_uint8[idx].float() / 255.0 - mean) / std
            loss = F.cross_entropy(model(x), y[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=12800, help="training images (random MNIST-format data)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        write_mini_mnist(Path(tmp), "MNIST", n_train=args.train + 128, n_test=128)
        cfg = compose("task=mnist_mlp", "optim=momentum", f"task.epochs={args.epochs}", f"data_dir={tmp}",
                      f"results_dir={tmp}/results", f"device={args.device}", "task.val_fraction=0.01",
                      "trainer.log_every=10")
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
        torch.manual_seed(0)
        task = build_task(cfg["task"], tmp, device)
        initial = copy.deepcopy(task.model.state_dict())
        x, y = task.splits["train"]
        steps = task.steps_per_epoch() * args.epochs
        ratios, t_trainer, t_bare = [], [], []
        for repeat in range(args.repeats):
            task.model.load_state_dict(initial)
            t1, _, _ = time_trainer(cfg, task, Path(tmp) / f"run{repeat}", device, epochs=args.epochs)
            task.model.load_state_dict(initial)
            generator = torch.Generator(device=device).manual_seed(0)
            t2, _ = timed(lambda: bare_loop(task.model, x.flatten(1), y, args.epochs, task.batch_size,
                                            cfg["optim"]["lr"], cfg["optim"]["momentum"], cfg["task"]["weight_decay"],
                                            generator, device), device)
            t_trainer.append(t1)
            t_bare.append(t2)
            ratios.append(t1 / t2)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} steps={steps} "
          f"(MNIST-shaped MLP 784-1000-1000-10, batch {task.batch_size}, log every 10, checkpoint per epoch)")
    print("| loop | median s | ms/step |")
    print("|---|---|---|")
    for name, times in (("optbench Trainer", t_trainer), ("bare PyTorch loop", t_bare)):
        med = statistics.median(times)
        print(f"| {name} | {med:.3f} | {1000 * med / steps:.2f} |")
    ratio = statistics.median(ratios)
    print(f"overhead ratio (trainer / bare, median of {args.repeats}): {ratio:.3f} "
          f"-> {100 * (ratio - 1):+.1f}% (goal < +5%)")


if __name__ == "__main__":
    main()
