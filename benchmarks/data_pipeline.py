"""Augmented CIFAR batches per second: optbench's device-resident pipeline vs torchvision's DataLoader, in one
process, on full-size random CIFAR data (50,000 x 32 x 32 x 3 uint8). Goal: >= 10x on CPU.

    python benchmarks/data_pipeline.py [--images 50000] [--batch-size 128] [--workers 2] [--repeats 3]
                                       [--device cpu|cuda] [--threads 1]

optbench: the CIFAR ImageClassification task's own train_batches (on-device permutation, uint8 gather,
batched RandomCrop(32, padding 4) + flip, normalisation), fed from an in-memory dataset entry so the real task
code runs. torchvision: a Dataset of PIL images with RandomCrop(32, padding=4), RandomHorizontalFlip,
ToTensor, Normalize, through DataLoader(shuffle=True, num_workers=2) (batches moved to the device when it is
not the CPU). Each side produces one full epoch of batches; the time includes the DataLoader's worker start-up
(as every epoch pays it without persistent_workers); the steady-state rate after the first batch is shown too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from _timing import sync

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def random_cifar(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), rng.randint(0, 10, size=n).astype(np.int64)


def time_epoch(batches, device: torch.device) -> tuple[float, float, int]:
    """(epoch seconds, seconds after the first batch, batch count) of drawing every (x, y) batch on ``device``."""
    start = time.perf_counter()
    first = None
    count = 0
    for x, _ in batches:
        count += 1
        if first is None:
            sync(device)
            first = time.perf_counter()
    sync(device)
    end = time.perf_counter()
    assert x.device.type == device.type and x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
    return end - start, end - first, count


def optbench_epoch(images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device, seed: int
                   ) -> tuple[float, float, int]:
    """(epoch seconds, seconds after the first batch, batches) through the real CIFAR task code."""
    from optbench.tasks import classification

    spec = classification.DatasetSpec(
        lambda data_dir, download: {"train": (torch.from_numpy(images), torch.from_numpy(labels)),
                                    "test": (torch.from_numpy(images[:16]), torch.from_numpy(labels[:16]))},
        MEAN, STD, 10)
    classification.DATASETS["benchmark_random_cifar"] = spec
    cfg = {"name": "bench", "dataset": "benchmark_random_cifar", "model": "logreg", "batch_size": batch_size,
           "val_fraction": 0.0, "augment": "crop_flip"}
    task = classification.ImageClassification(cfg, "unused", device)
    generator = torch.Generator(device=device).manual_seed(seed)
    sync(device)
    return time_epoch(task.train_batches(generator), device)


class PilCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: a PIL image from the uint8 array, then the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def torchvision_epoch(images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int, device: torch.device,
                      seed: int) -> tuple[float, float, int]:
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    loader = torch.utils.data.DataLoader(PilCifar(images, labels, transform), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(seed))
    return time_epoch(((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader),
                      device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of this process (1 avoids OpenMP stalls on a shared 2-core CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images, labels = random_cifar(args.images)
    results = {"optbench": [], "torchvision": []}
    for repeat in range(args.repeats):  # alternate, so load from other processes hits both sides alike
        results["optbench"].append(optbench_epoch(images, labels, args.batch_size, device, repeat))
        results["torchvision"].append(torchvision_epoch(images, labels, args.batch_size, args.workers, device, repeat))
    batches = results["optbench"][0][2]
    assert batches == results["torchvision"][0][2]
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} images={args.images} "
          f"batch={args.batch_size} batches/epoch={batches} DataLoader workers={args.workers} repeats={args.repeats}")
    print("| pipeline | epoch s (median) | batches/s | images/s | steady batches/s |")
    print("|---|---|---|---|---|")
    rates = {}
    for name, runs in results.items():
        epoch = statistics.median(r[0] for r in runs)
        steady = statistics.median((r[2] - 1) / r[1] for r in runs)
        rates[name] = (batches / epoch, steady)
        label = "optbench device-resident" if name == "optbench" else f"torchvision DataLoader ({args.workers} workers)"
        print(f"| {label} | {epoch:.3f} | {batches / epoch:.1f} | {args.images / epoch:.0f} | {steady:.1f} |")
    ratio = rates["optbench"][0] / rates["torchvision"][0]
    steady = rates["optbench"][1] / rates["torchvision"][1]
    print(f"speed-up (optbench / torchvision batches per second): {ratio:.1f}x per epoch, {steady:.1f}x steady state "
          f"(goal >= 10x)")


if __name__ == "__main__":
    main()
