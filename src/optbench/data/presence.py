"""Whether a task's dataset is on disk, answered without reading it: the reproduction report skips the runs of
an absent dataset and says where the files go and how to get them (the readers' own DatasetNotFoundError)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from optbench.data.cifar import find_cifar_files
from optbench.data.errors import DatasetNotFoundError
from optbench.data.idx import find_idx_files
from optbench.data.imagenet import split_dir
from optbench.data.text import char_corpus_path, find_word_files

# task.dataset (or task.kind for ImageNet) -> the readers' locating function; synthetic tasks and the embedded
# digits need nothing
LOCATE: dict[str, Callable[[Path], Any]] = {
    "mnist": lambda d: find_idx_files("MNIST", d),
    "fmnist": lambda d: find_idx_files("FashionMNIST", d),
    "cifar10": lambda d: find_cifar_files("cifar10", d),
    "cifar100": lambda d: find_cifar_files("cifar100", d),
    "ptb": lambda d: find_word_files("ptb", d),
    "wikitext2": lambda d: find_word_files("wikitext2", d),
    "tinyshakespeare": char_corpus_path,
    "imagenet": lambda d: [split_dir(d, split) for split in ("train", "val")],
}


def missing_data(task: Mapping[str, Any], data_dir: str | Path) -> str:
    """'' when the task's dataset is there; else the reader's message (the expected path and how to get it)."""
    locate = LOCATE.get(task.get("dataset") or task.get("kind") or "")
    if locate is None:
        return ""
    try:
        locate(Path(data_dir))
    except DatasetNotFoundError as err:
        return str(err)
    return ""
