"""CIFAR-10 / CIFAR-100 from the official "python version" pickles, in torchvision's layout:
``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch}`` and ``<data_dir>/cifar-100-python/{train, test}``.

Images come back as uint8 [N, 32, 32, 3] (NHWC, torchvision's ``.data`` layout and the DatasetSpec contract of
optbench.tasks.classification, which moves them to the device once as NCHW); labels as int64 [N] (CIFAR-100:
the 100 fine labels). Read with pickle + numpy, so no torchvision dataset object is needed when the files exist.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from optbench.data.errors import DatasetError, DatasetNotFoundError, reading

# name -> (folder, training files, test files, label key, torchvision class)
LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
                "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "CIFAR100"),
}
_URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
         "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickle file -> (uint8 [N, 32, 32, 3], int64 [N]). Accepts the original Python 2 pickles (bytes keys)
    and re-pickled ones (str keys)."""
    with reading(path, "delete the dataset folder and fetch it again"):
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise DatasetError(f"{path} is not a CIFAR batch: expected keys 'data' and {label_key!r}, "
                         f"found {sorted(entry)}")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DatasetError(f"{path}: data of shape {data.shape} with {len(labels)} labels; expected [N, 3072] and N")
    # rows hold the red, green and blue 32x32 planes one after the other
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _download(name: str, data_dir: Path) -> None:
    import torchvision

    cls = getattr(torchvision.datasets, LAYOUTS[name][4])
    cls(str(data_dir), train=True, download=True)


def _how_to_get(name: str, root: Path) -> str:
    return (f"Download {_URLS[name]} and unpack it into {root} (`tar xzf {_URLS[name].rsplit('/', 1)[1]} -C {root}`),"
            " or pass task.download=true when online.")


def find_cifar_files(name: str, data_dir: str | Path) -> Path:
    """The folder holding all of a CIFAR set's batch files; a missing file is a DatasetNotFoundError that names
    it and says where to get the archive."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown CIFAR dataset {name!r}; valid: {', '.join(LAYOUTS)}")
    folder, train_files, test_files, _, _ = LAYOUTS[name]
    root = Path(data_dir).expanduser()
    missing = [root / folder / f for f in train_files + test_files if not (root / folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(name, missing[0], _how_to_get(name, root))
    return root / folder


def load_cifar(name: str, data_dir: str | Path, download: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'train': (uint8 [50000, 32, 32, 3], int64 [50000]), 'test': (... [10000] ...)} for cifar10 / cifar100."""
    root = Path(data_dir).expanduser()
    try:
        base = find_cifar_files(name, root)
    except DatasetNotFoundError as missing:
        if not download:
            raise
        try:
            _download(name, root)
        except Exception as err:  # offline, bad mirror, ...
            raise DatasetNotFoundError(name, missing.path, f"Download failed ({err}). Fetch {_URLS[name]} and "
                                       f"unpack it into {root} (tar xzf ... -C {root}).") from err
        base = find_cifar_files(name, root)
    _, train_files, test_files, label_key, _ = LAYOUTS[name]
    out = {}
    for split, files in (("train", train_files), ("test", test_files)):
        parts = [read_batch(base / f, label_key) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        out[split] = (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
    return out
