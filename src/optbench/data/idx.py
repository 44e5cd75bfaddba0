"""MNIST and Fashion-MNIST from the IDX files in torchvision's layout: ``<data_dir>/<Name>/raw/*-ubyte(.gz)``
(Fashion-MNIST also where Debian's dataset-fashion-mnist installs it).

Read with numpy straight from the (gzipped) IDX format, so no torchvision dataset object or download is needed
when the files are there.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import torch

from optbench.data.errors import DatasetError, DatasetNotFoundError, reading

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# torchvision class name -> where a system package installs the four files (searched after data_dir)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SYSTEM_DIRS = {"FashionMNIST": (DEBIAN_FASHION_MNIST,)}

# torchvision class name -> how to get the four files offline
_SOURCES = {
    "MNIST": "copy the four MNIST IDX files (train/t10k images and labels, *-ubyte.gz) from any MNIST mirror there",
    "FashionMNIST": "`apt-get install dataset-fashion-mnist && mkdir -p {raw} && "
                    "cp /usr/share/datasets/fashion-mnist/*.gz {raw}/`",
}


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with reading(path):
        with opener(path, "rb") as f:
            data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number); delete it and fetch it again")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise DatasetError(f"{path} is truncated: {len(data) - offset} bytes of data, expected {expected}; delete it "
                           "and fetch it again")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


def _find(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / f"{stem}.gz", raw / stem):
        if candidate.exists():
            return candidate
    return None


def _complete(folder: Path) -> dict[str, Path] | None:
    """The four files of one folder, or None unless all four are there (a set is never mixed from two places)."""
    found = {stem: _find(folder, stem) for pair in FILES.values() for stem in pair}
    return found if all(found.values()) else None  # type: ignore[return-value]


def find_idx_files(name: str, data_dir: str | Path) -> dict[str, Path]:
    """The four IDX files of name from ``<data_dir>/<name>/raw``, else from where a system package installs them
    (Debian's dataset-fashion-mnist); a missing set is a DatasetNotFoundError naming the path and how to get it."""
    raw = Path(data_dir).expanduser() / name / "raw"
    for folder in (raw, *SYSTEM_DIRS.get(name, ())):
        found = _complete(folder)
        if found:
            return found
    missing = next(stem for pair in FILES.values() for stem in pair if _find(raw, stem) is None)
    raise DatasetNotFoundError(name, raw / f"{missing}.gz", f"To get the files: {_SOURCES[name].format(raw=raw)}; "
                               "or pass task.download=true when online.")


def _download(name: str, root: Path) -> None:
    import torchvision

    for train in (True, False):
        getattr(torchvision.datasets, name)(str(root), train=train, download=True)


def _located(name: str, data_dir: str | Path, download: bool) -> dict[str, Path]:
    """find_idx_files, downloading through torchvision first when asked and the files are not there."""
    try:
        return find_idx_files(name, data_dir)
    except DatasetNotFoundError:
        if not download:
            raise
    raw = Path(data_dir).expanduser() / name / "raw"
    try:
        _download(name, Path(data_dir).expanduser())
    except Exception as err:  # no network, bad mirror, ...
        raise DatasetNotFoundError(name, raw, f"Download failed ({err}). To get the files offline: "
                                   f"{_SOURCES[name].format(raw=raw)}.") from err
    return find_idx_files(name, data_dir)


def load_idx_dataset(name: str, data_dir: str | Path, download: bool = False
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'train': (images uint8 [N, 28, 28], labels int64 [N]), 'test': ...} for name in MNIST, FashionMNIST."""
    files = _located(name, data_dir, download)
    out = {}
    for split, (images, labels) in FILES.items():
        x = read_idx(files[images])
        y = read_idx(files[labels])
        if len(x) != len(y):
            raise ValueError(f"{files[images].parent}: {split} has {len(x)} images but {len(y)} labels")
        out[split] = (torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64)))
    return out


def link_debian_fashion_mnist(data_dir: str | Path, source: str | Path = DEBIAN_FASHION_MNIST) -> Path:
    """Copy Debian's dataset-fashion-mnist files into the torchvision layout under data_dir."""
    raw = Path(data_dir).expanduser() / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in (s for pair in FILES.values() for s in pair):
        src = Path(source) / f"{stem}.gz"
        if not src.exists():
            raise DatasetNotFoundError("FashionMNIST", src, "Install it with `apt-get install dataset-fashion-mnist`.")
        if not (raw / src.name).exists():
            shutil.copyfile(src, raw / src.name)
    return raw
