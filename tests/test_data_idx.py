"""The IDX reader finds a dataset where torchvision puts it, else where Debian's package installs it, and never
mixes a set from two places; a missing set names the path under data_dir and how to get the files."""

from __future__ import annotations

import pytest

from conftest import write_mini_mnist
from optbench.data import idx
from optbench.data.errors import DatasetNotFoundError


def test_fashion_mnist_is_found_where_debian_installs_it(tmp_path, monkeypatch):
    system = write_mini_mnist(tmp_path / "system", "FashionMNIST", n_train=30, n_test=10) / "FashionMNIST" / "raw"
    monkeypatch.setitem(idx.SYSTEM_DIRS, "FashionMNIST", (system,))
    data = idx.load_idx_dataset("FashionMNIST", tmp_path / "empty")
    assert data["train"][0].shape == (30, 28, 28) and data["test"][1].shape == (10,)
    local = write_mini_mnist(tmp_path / "local", "FashionMNIST", n_train=20, n_test=5)  # data_dir comes first
    assert len(idx.load_idx_dataset("FashionMNIST", local)["train"][0]) == 20


def test_a_set_is_never_mixed_and_a_missing_one_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(idx.SYSTEM_DIRS, "FashionMNIST", (tmp_path / "nowhere",))
    root = write_mini_mnist(tmp_path / "data", "FashionMNIST")
    (root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        idx.find_idx_files("FashionMNIST", root)
    message = str(err.value)
    assert str(root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz") in message
    assert "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(DatasetNotFoundError):
        idx.find_idx_files("MNIST", root)  # no system folder for MNIST
