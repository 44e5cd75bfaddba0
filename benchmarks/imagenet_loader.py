"""Images per second of the ImageNet DataLoader pipeline (optbench.data.imagenet, what task=imagenet trains
from): JPEG decode (PIL) + RandomResizedCrop(224) + flip into uint8 batches, with 0, 1 and 2 worker processes
in the same process, on a generated JPEG tree of ImageNet-like files (500 x 375, about 110 KB at quality 90).
Also the Resize(256) + CenterCrop(224) evaluation pipeline, and the per-image cost of each stage in this process.

    python benchmarks/imagenet_loader.py [--images 512] [--batch-size 64] [--workers 0,1,2] [--repeats 2]
                                         [--root DIR] [--target 2500]

The loader is timed as the trainer uses it: one DataLoader with persistent workers, its batches planned per
pass; the first pass (worker start-up, file cache) is not timed. Normalisation is not included: it runs on the
training device. ``--target`` is the rate a GPU consumes (ResNet-50 trains at about 2,500 images/s on one
H100 with mixed precision): the last line says how many cores that takes at the measured per-worker rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from optbench.data import imagenet as data


def write_tree(root: Path, images: int, classes: int = 8, seed: int = 0) -> float:
    """<root>/imagenet/train/<wnid>/*.JPEG: smooth random scenes with fine noise, JPEG quality 90, so decoding
    costs what a real ImageNet photo costs. Returns the mean file size in KB."""
    rng = np.random.RandomState(seed)
    sizes = []
    for i in range(images):
        folder = root / "imagenet" / "train" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.randint(0, 256, size=(12, 16, 3)).astype(np.uint8)).resize((500, 375),
                                                                                                 Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.randint(-24, 25, size=(375, 500, 3))
        path = folder / f"img_{i:05d}.JPEG"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        sizes.append(path.stat().st_size / 1024)
    return float(np.mean(sizes))


def plan(samples: int, batch_size: int, train: bool, seed: int = 0) -> list[list]:
    rng = np.random.RandomState(seed)
    order = rng.permutation(samples).tolist()
    items = [(i, int(rng.randint(0, 2 ** 62)) if train else None) for i in order]
    return [items[k:k + batch_size] for k in range(0, len(items), batch_size)]


def time_pass(loader, batches: data.PlannedBatches, passes: list[list]) -> float:
    """Seconds to draw every batch of one planned pass."""
    batches.plan = passes
    start = time.perf_counter()
    count = 0
    for images, _ in loader:
        count += len(images)
        assert images.dtype == torch.uint8 and images.shape[1:] == (224, 224, 3)
    assert count == sum(len(b) for b in passes)
    return time.perf_counter() - start


def stage_costs(samples: list, repeats: int = 3) -> dict[str, float]:
    """Milliseconds per image of each stage, in this process: decode, train crop + flip, eval resize + crop,
    conversion to a uint8 tensor."""
    from torchvision.datasets.folder import default_loader

    times = {"decode": [], "train crop+flip": [], "eval resize+crop": [], "to tensor": []}
    for _ in range(repeats):
        for k, (path, _) in enumerate(samples[:64]):
            t0 = time.perf_counter()
            image = default_loader(path)
            t1 = time.perf_counter()
            crop = data.train_image(image, 224, k)
            t2 = time.perf_counter()
            data.eval_image(image, 224, 256)
            t3 = time.perf_counter()
            torch.from_numpy(np.array(crop, dtype=np.uint8))
            t4 = time.perf_counter()
            for name, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[name].append(1000 * dt)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", default=None, help="where to write the JPEG tree (default: a temporary folder)")
    parser.add_argument("--target", type=float, default=2500.0, help="images/s the GPU consumes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root or tempfile.mkdtemp(prefix="imagenet_bench_"))
    kb = write_tree(root, args.images)
    samples = data.image_folder(root, "train").samples
    print(f"{len(samples)} JPEGs of 500 x 375, mean {kb:.0f} KB, batch {args.batch_size}, "
          f"{len(os.sched_getaffinity(0))} usable CPUs, torch {torch.__version__}")
    costs = stage_costs(samples)
    print("per image in this process (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()))
    print("| workers | train images/s | eval images/s |")
    print("|---|---:|---:|")
    rates = {}
    for workers in (int(w) for w in args.workers.split(",")):
        batches = data.PlannedBatches()
        loader = data.make_loader(data.ImageNetImages(samples, 224, 256), batches, workers, pin_memory=False)
        out = []
        for train in (True, False):
            time_pass(loader, batches, plan(len(samples), args.batch_size, train, seed=99))  # warm-up, untimed
            seconds = [time_pass(loader, batches, plan(len(samples), args.batch_size, train, seed=r))
                       for r in range(args.repeats)]
            out.append(len(samples) / statistics.median(seconds))
        rates[workers] = out[0]
        print(f"| {workers} | {out[0]:.0f} | {out[1]:.0f} |")
        del loader
    per_core = max(rate / max(workers, 1) for workers, rate in rates.items())
    print(f"training pipeline: {per_core:.0f} images/s per core (best of the rows, per decoding process) -> about "
          f"{args.target / per_core:.0f} cores to feed {args.target:.0f} images/s")


if __name__ == "__main__":
    main()
