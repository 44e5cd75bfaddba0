"""Data-parallel scaling: training throughput of the MLP task with 1 process vs N processes under torchrun
(gloo on CPU, NCCL on GPUs), same global batch, read from each run's metrics.csv (training time only).

    python benchmarks/ddp_scaling.py [--nproc 2] [--epochs 2] [--train 12800] [--device cpu]

On CPU the processes split the machine's cores (each gets threads = cores / N), so the ratio shows what DDP
costs or gains on one machine. With one GPU, `--nproc 1 --ddp` measures the DDP overhead against no DDP.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import write_mini_mnist  # noqa: E402


def train_throughput(results: Path, nproc: int, args, ddp: bool) -> float:
    overrides = ["task=mnist_mlp", "optim=momentum", f"task.epochs={args.epochs}", f"data_dir={args.data}",
                 f"results_dir={results}", f"device={args.device}", "task.val_fraction=0.01", "trainer.log_every=50"]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if ddp else [sys.executable])
    threads = max(1, (os.cpu_count() or 2) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*launcher, str(REPO / "main.py"), *overrides], check=True, env=env, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    rows = list(csv.DictReader(open(next(results.glob("*/*/*/seed0/metrics.csv")))))
    images = args.train * args.epochs
    return images / float(rows[-1]["time_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=12800)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ddp", action="store_true", help="launch the N-process side through torchrun even if N=1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.data = Path(tmp) / "data"
        write_mini_mnist(args.data, "MNIST", n_train=round(args.train / 0.99), n_test=128)
        single = train_throughput(Path(tmp) / "one", 1, args, ddp=False)
        multi = train_throughput(Path(tmp) / "many", args.nproc, args, ddp=True)
    print(f"MNIST-shaped MLP 784-1000-1000-10, batch 128 global, {args.epochs} epochs, device={args.device}")
    print("| processes | images/s |")
    print("|---|---|")
    print(f"| 1 (no DDP) | {single:.0f} |")
    print(f"| {args.nproc} (torchrun, DDP) | {multi:.0f} |")
    print(f"throughput ratio {args.nproc}-process / 1-process: {multi / single:.2f}x")


if __name__ == "__main__":
    main()
