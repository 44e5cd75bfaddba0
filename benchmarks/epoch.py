"""One training epoch of ResNet-18 on CIFAR-sized data: optbench (the cifar10 task through optbench.train's
Trainer) vs a bare PyTorch loop fed by torchvision's DataLoader (RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize, 2 workers), same model initialisation, optimizer and batch size, in
one process. Prints the time ratio (optbench / bare; below 1 = optbench faster).

    python benchmarks/epoch.py [--images 2048] [--batch-size 128] [--workers 2] [--repeats 1] [--device cpu]
                              [--threads N]

On a CPU use a subset (--images 2048 takes a few minutes per side on 2 cores); on a GPU use --images 50000.
The data are random CIFAR-10 pickles written to a temporary directory. The optbench side is a whole 1-epoch
fit(): training epoch, evaluation of a small validation/test split (1% / 32 images) and the checkpoint; the
epoch-0 evaluation before training is not timed. The bare loop does only the training steps.
"""

from __future__ import annotations

import argparse
import copy
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

from _timing import print_comparison, time_trainer, timed  # noqa: E402

from optbench.tasks import build_task  # noqa: E402
from optbench.run_config import optimizer_config  # noqa: E402


def bare_epoch(model, images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int, optim_cfg: dict,
               device: torch.device) -> int:
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    loader = torch.utils.data.DataLoader(PilCifar(images, labels, transform), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=device.type == "cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=optim_cfg["lr"], momentum=optim_cfg["momentum"],
                                weight_decay=optim_cfg["weight_decay"])
    model.train()
    steps = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
    loss.item()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048, help="training images (random CIFAR-10 data)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: torch's); 1 avoids OpenMP stalls on a busy shared CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        per_file = -(-int(args.images / 0.99 + 1) // 5)
        write_mini_cifar(Path(tmp), "cifar10", per_file=per_file, n_test=32)
        from omegaconf import OmegaConf

        cfg = compose("task=cifar10", "task.model=resnet18", "optim=momentum", "task.epochs=1",
                      f"task.batch_size={args.batch_size}", "task.val_fraction=0.01",
                      f"++task.train_limit={args.images}", f"data_dir={tmp}", f"results_dir={tmp}/results",
                      f"device={args.device}")
        cfg = OmegaConf.to_container(cfg, resolve=True)
        torch.manual_seed(0)
        task = build_task(cfg["task"], tmp, device)
        initial = copy.deepcopy(task.model.state_dict())
        x_train, y_train = task.splits["train"]
        images = x_train.permute(0, 2, 3, 1).cpu().numpy()  # the same images, NHWC for PIL
        labels = y_train.cpu().numpy()
        optim_cfg = optimizer_config(cfg)
        t_optbench, t_train, t_bare, ratios, train_ratios = [], [], [], [], []
        for repeat in range(args.repeats):
            task.model.load_state_dict(initial)
            t1, t_epoch, trainer = time_trainer(cfg, task, Path(tmp) / f"run{repeat}", device, epochs=1)
            steps = trainer.step
            task.model.load_state_dict(initial)
            t2, bare_steps = timed(lambda: bare_epoch(task.model, images, labels, args.batch_size, args.workers,
                                                      optim_cfg, device), device)
            assert steps == bare_steps, (steps, bare_steps)
            t_optbench.append(t1)
            t_bare.append(t2)
            ratios.append(t1 / t2)
            t_train.append(t_epoch)
            train_ratios.append(t_epoch / t2)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} images={len(labels)} "
          f"steps={steps} (ResNet-18, batch {args.batch_size}, SGD momentum, DataLoader workers={args.workers})")
    print_comparison([("optbench Trainer (cifar10 task), whole fit()", t_optbench),
                      ("... of which the training epoch", t_train),
                      (f"bare loop + torchvision DataLoader ({args.workers} workers)", t_bare)],
                     len(labels), "images", [("fit()", ratios), ("training epoch", train_ratios)],
                     "CPU: level expected; GPU goal >= 2x faster")

if __name__ == "__main__":
    main()
