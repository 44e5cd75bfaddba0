"""ImageNet (ILSVRC-2012) in torchvision's ImageFolder layout, ``<data_dir>/imagenet/{train,val}/<wnid>/*.JPEG``,
decoded and augmented in DataLoader worker processes.

About 150 GB of JPEG do not fit the device-resident pipeline of the small datasets (optbench.data.batches), so
the file lists come from torchvision.datasets.ImageFolder, and workers decode with PIL (ImageFolder's loader)
and apply torchvision's functional transforms. A worker returns uint8 HWC images (a quarter of the bytes of
float32 to copy and pin); the task normalises them on the device.

Determinism: the main process draws each image's seed (from the trainer's generator), and an image's crop and
flip depend only on that seed: torchvision's RandomResizedCrop and RandomHorizontalFlip draws, made from a
generator seeded with it. So the batches are the same with 0, 1 or 16 workers, and a resumed epoch draws them
again exactly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from optbench.data.errors import DatasetError, DatasetNotFoundError

FOLDER = "imagenet"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet normalisation
HOW_TO_GET = ("ImageNet needs an account: register at https://image-net.org, download ILSVRC2012_img_train.tar and "
              "ILSVRC2012_img_val.tar, and unpack them into {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG "
              "(pytorch/examples' imagenet/extract_ILSVRC.sh does both, sorting the flat val images into their "
              "class folders).")


def split_dir(data_dir: str | Path, split: str) -> Path:
    """``<data_dir>/imagenet/<split>``, which must be a folder (its class folders are ImageFolder's to check)."""
    root = Path(data_dir).expanduser() / FOLDER
    path = root / split
    if not path.is_dir():
        raise DatasetNotFoundError("ImageNet", path, HOW_TO_GET.format(root=root))
    return path


def image_folder(data_dir: str | Path, split: str):
    """torchvision ImageFolder of ``<data_dir>/imagenet/<split>``; a missing or empty folder is a
    DatasetNotFoundError that names it and says how to get ImageNet."""
    from torchvision.datasets import ImageFolder

    path = split_dir(data_dir, split)
    how = HOW_TO_GET.format(root=path.parent)
    try:
        return ImageFolder(str(path))
    except FileNotFoundError as err:  # no class folders (e.g. the flat official val), or no images in them
        raise DatasetNotFoundError("ImageNet", path / "<wnid>" / "*.JPEG", f"{err}. {how}") from None


def check_same_classes(train, val) -> None:
    """Labels are indices into the sorted class folders, so val must have exactly train's classes."""
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))[:3]
        only_val = sorted(set(val.classes) - set(train.classes))[:3]
        raise DatasetError(f"{Path(train.root).parent}: train/ and val/ must have the same class folders; only in "
                           f"train: {only_train or 'none'}, only in val: {only_val or 'none'} (first 3 shown)")


def split_per_class(targets: Sequence[int], val_fraction: float) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: the last ``val_fraction`` of each class's images (ImageFolder sorts them by
    file name), so the held-out set has every class in proportion."""
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(int(target), []).append(index)
    fit, held_out = [], []
    for indices in by_class.values():
        n_val = int(round(len(indices) * val_fraction))
        fit += indices[:len(indices) - n_val]
        held_out += indices[len(indices) - n_val:]
    return sorted(fit), sorted(held_out)


SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # RandomResizedCrop's defaults


def crop_params(width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of RandomResizedCrop's crop: torchvision's get_params algorithm (10 tries at a
    random area and log-uniform aspect ratio, else a central crop), drawing from ``generator`` in the same order
    and float32 arithmetic, so a generator seeded with s gives what torch.manual_seed(s) gives torchvision."""
    area, log_ratio = height * width, torch.log(torch.tensor(RATIO))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(SCALE[0], SCALE[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w, h = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            left = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return top, left, h, w
    return central_crop(width, height)


def central_crop(width: int, height: int) -> tuple[int, int, int, int]:
    """get_params' fallback: the largest central crop with an aspect ratio in RATIO."""
    w, h = width, height
    if width / height < min(RATIO):
        h = int(round(width / min(RATIO)))
    elif width / height > max(RATIO):
        w = int(round(height * max(RATIO)))
    return (height - h) // 2, (width - w) // 2, h, w


def train_image(image, size: int, seed: int):
    """RandomResizedCrop(size) + RandomHorizontalFlip, drawn as torchvision draws them after
    torch.manual_seed(seed), but from a private generator (the global RNG is untouched; no RNG fork per image)."""
    from torchvision.transforms import functional as F

    generator = torch.Generator().manual_seed(seed)
    top, left, height, width = crop_params(image.width, image.height, generator)
    flip = bool(torch.rand(1, generator=generator) < 0.5)
    image = F.resized_crop(image, top, left, height, width, [size, size], antialias=True)
    return F.hflip(image) if flip else image


def eval_image(image, size: int, resize: int):
    """Resize(resize) (the shorter side) + CenterCrop(size): 256 and 224, the standard ImageNet evaluation."""
    from torchvision.transforms import functional as F

    return F.center_crop(F.resize(image, resize, antialias=True), size)


class ImageNetImages(torch.utils.data.Dataset):
    """Items are (index, seed): seed None is an evaluation image, else a training image augmented from the seed.
    Returns (uint8 [size, size, 3], label). The 1.3M paths are one numpy bytes array, not a list of Python
    strings, so forked workers share its pages instead of copying them as reference counts change."""

    def __init__(self, samples: Sequence[tuple[str, int]], size: int, resize: int) -> None:
        from torchvision.datasets.folder import default_loader

        self.paths = np.array([os.fsencode(path) for path, _ in samples])
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.size, self.resize, self.loader = size, resize, default_loader

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: tuple[int, int | None]) -> tuple[torch.Tensor, int]:
        index, seed = item
        path, label = os.fsdecode(self.paths[index]), int(self.labels[index])
        image = self.loader(path)
        if seed is None:
            image = eval_image(image, self.size, self.resize)
        else:
            image = train_image(image, self.size, seed)
        return torch.from_numpy(np.array(image, dtype=np.uint8)), label


class PlannedBatches(torch.utils.data.Sampler):
    """A batch sampler whose batches are set before each pass (``plan``), so one DataLoader and its persistent
    workers serve every epoch and every evaluation."""

    def __init__(self) -> None:
        self.plan: list[list[Any]] = []

    def __iter__(self):
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def make_loader(dataset: ImageNetImages, batches: PlannedBatches, workers: int, pin_memory: bool):
    """The DataLoader: ``workers`` processes kept alive between passes (none: decode in this process)."""
    extra = {"persistent_workers": True, "prefetch_factor": 4} if workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                                       **extra)
