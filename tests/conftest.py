"""Shared fixtures: miniature datasets in the real on-disk formats, and composing the real Hydra config."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

torch.set_num_threads(1)  # the suite shares 2 cores; keeps timings stable and runs deterministic


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (the MNIST format) with gzip, as the originals are distributed."""
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_mini_mnist(root: Path, name: str = "MNIST", n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """A miniature MNIST-format dataset whose label is readable from the image (class-dependent blobs), so
    training on it can actually learn."""
    rng = np.random.RandomState(seed)
    raw = root / name / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.randint(0, 10, size=n).astype(np.uint8)
        images = rng.randint(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label: 2 * label + 6, 4:24] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def mini_data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mini_mnist(root, "MNIST", seed=0)
    write_mini_mnist(root, "FashionMNIST", seed=1)
    return root


def compose(*overrides: str):
    """The config `python main.py <overrides>` would run."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))
