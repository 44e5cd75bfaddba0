"""Shared fixtures: miniature datasets in the real on-disk formats, and composing the real Hydra config."""

from __future__ import annotations

import gzip
import os
import sys
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
sys.path.insert(0, str(REPO / "src"))  # test this checkout, whichever one pip installed in editable mode
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))  # and
# so do the subprocesses tests start (python -m optbench.plot ...)

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


# ---------------------------------------------------------------- CIFAR pickles and text corpora (issue 4)
def write_mini_cifar(root: Path, name: str = "cifar10", per_file: int = 10, n_test: int = 10, seed: int = 0) -> Path:
    """Miniature CIFAR in the official python-pickle layout (bytes keys, as the Python 2 originals load):
    cifar-10-batches-py/data_batch_1..5 + test_batch, or cifar-100-python/train + test. The label is readable
    from the image (a bright class-dependent row band in the red plane)."""
    import pickle

    rng = np.random.RandomState(seed)
    if name == "cifar10":
        folder, label_key, classes = root / "cifar-10-batches-py", b"labels", 10
        files = [(f"data_batch_{i}", per_file) for i in range(1, 6)] + [("test_batch", n_test)]
    else:
        folder, label_key, classes = root / "cifar-100-python", b"fine_labels", 100
        files = [("train", 5 * per_file), ("test", n_test)]
    folder.mkdir(parents=True, exist_ok=True)
    for filename, n in files:
        labels = rng.randint(0, classes, size=n)
        images = rng.randint(0, 100, size=(n, 3, 32, 32)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 0, label % 30: label % 30 + 3, :] = 255
        entry = {b"batch_label": filename.encode(), label_key: labels.tolist(),
                 b"data": images.reshape(n, 3072), b"filenames": [b"x.png"] * n}
        if name == "cifar100":
            entry[b"coarse_labels"] = (labels // 5).tolist()
        with open(folder / filename, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return root


# a tiny "language" with structure an LSTM can learn: subject verb object sentences
_WORDS = {"s": ["the cat", "a dog", "the bird", "my friend"], "v": ["sees", "likes", "eats"],
          "o": ["the fish", "a ball", "bread", "water"]}


def mini_sentences(n: int, seed: int) -> list[str]:
    rng = np.random.RandomState(seed)
    return [" ".join(rng.choice(_WORDS[k]) for k in "svo") for _ in range(n)]


def write_mini_text(root: Path, lines: tuple[int, int, int] = (60, 12, 12)) -> Path:
    """PTB (train.txt names), WikiText-2 (wiki.*.tokens, with headings and blank lines) and TinyShakespeare."""
    for split, n, seed in zip(("train", "valid", "test"), lines, (0, 1, 2)):
        sentences = mini_sentences(n, seed)
        ptb = root / "ptb" / f"{split}.txt"
        ptb.parent.mkdir(parents=True, exist_ok=True)
        ptb.write_text("".join(f" {s} \n" for s in sentences))
        wiki = root / "wikitext-2" / f"wiki.{split}.tokens"
        wiki.parent.mkdir(parents=True, exist_ok=True)
        wiki.write_text(" \n = Heading = \n \n" + "".join(f" {s} . \n" for s in sentences))
    shakespeare = root / "tinyshakespeare" / "input.txt"
    shakespeare.parent.mkdir(parents=True, exist_ok=True)
    shakespeare.write_text("".join(f"First Citizen:\n{s.capitalize()}.\n\n" for s in mini_sentences(80, 3)))
    return root


@pytest.fixture(scope="session")
def mini_cifar_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_mini_cifar(root, "cifar10", seed=0)
    write_mini_cifar(root, "cifar100", seed=1)
    return root


@pytest.fixture(scope="session")
def mini_text_dir(tmp_path_factory) -> Path:
    return write_mini_text(tmp_path_factory.mktemp("text"))


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every row of the Markdown tables in ``text`` (pandas' to_markdown pads them)."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not set(line) <= set("|:- ")]
