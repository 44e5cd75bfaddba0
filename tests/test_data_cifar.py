"""CIFAR pickle reader: layout, pixel order, labels, and the errors for missing files."""

import pickle

import numpy as np
import pytest
import torch

from conftest import write_mini_cifar
from optbench.data import cifar
from optbench.data.cifar import load_cifar, read_batch
from optbench.data.errors import DatasetNotFoundError


def test_cifar10_batches_concatenate_in_order_as_nhwc_uint8(tmp_path):
    write_mini_cifar(tmp_path, "cifar10", per_file=6, n_test=4)
    data = load_cifar("cifar10", tmp_path)
    x, y = data["train"]
    assert x.shape == (30, 32, 32, 3) and x.dtype == torch.uint8
    assert y.shape == (30,) and y.dtype == torch.int64
    assert data["test"][0].shape == (4, 32, 32, 3)
    # image 6 is the first one of data_batch_2; its row of 3072 bytes holds the R, G and B planes in turn
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    row = raw[b"data"][0]
    assert torch.equal(x[6, :, :, 0], torch.from_numpy(row[:1024].reshape(32, 32)))
    assert torch.equal(x[6, :, :, 2], torch.from_numpy(row[2048:].reshape(32, 32)))
    assert y[6].item() == raw[b"labels"][0]


def test_cifar100_uses_the_fine_labels(tmp_path):
    write_mini_cifar(tmp_path, "cifar100", per_file=4, n_test=3)
    data = load_cifar("cifar100", tmp_path)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert data["train"][1].tolist() == raw[b"fine_labels"]
    assert data["train"][0].shape == (20, 32, 32, 3) and data["test"][0].shape == (3, 32, 32, 3)


def test_repickled_batches_with_str_keys_are_read(tmp_path):
    images = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072) % 251
    with open(tmp_path / "batch", "wb") as f:
        pickle.dump({"data": images.astype(np.uint8), "labels": [3, 7]}, f)
    x, y = read_batch(tmp_path / "batch", "labels")
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [3, 7]
    assert x[1, 0, 1, 1] == images[1, 1024 + 1]  # pixel (0, 1) of the green plane


def test_a_malformed_batch_is_a_clear_error(tmp_path):
    with open(tmp_path / "batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="expected \\[N, 3072\\]"):
        read_batch(tmp_path / "batch", "labels")
    with pytest.raises(ValueError, match="'fine_labels'"):
        read_batch(tmp_path / "batch", "fine_labels")


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_dataset_names_the_path_and_how_to_get_it(tmp_path, name, folder):
    with pytest.raises(DatasetNotFoundError) as err:
        load_cifar(name, tmp_path)
    message = str(err.value)
    assert str(tmp_path / folder) in message
    assert "cs.toronto.edu" in message and "download=true" in message


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline(name, root):
        raise OSError("no network")

    monkeypatch.setattr(cifar, "_download", offline)
    with pytest.raises(DatasetNotFoundError, match="Download failed \\(no network\\)"):
        load_cifar("cifar10", tmp_path, download=True)


def test_cifar_task_splits_first_90_percent_and_keeps_uint8_on_device(mini_cifar_dir):
    from optbench.tasks.classification import ImageClassification

    cfg = {"name": "cifar10", "dataset": "cifar10", "model": "resnet20", "batch_size": 8, "val_fraction": 0.1,
           "augment": "crop_flip"}
    task = ImageClassification(cfg, str(mini_cifar_dir), torch.device("cpu"))
    full = load_cifar("cifar10", mini_cifar_dir)
    x_train, y_train = task.splits["train"]
    assert x_train.dtype == torch.uint8 and x_train.shape == (45, 3, 32, 32)
    assert torch.equal(x_train, full["train"][0][:45].permute(0, 3, 1, 2))
    assert torch.equal(task.splits["val"][1], full["train"][1][45:])
    assert torch.equal(task.splits["test"][1], full["test"][1])
    # evaluation inputs: (x / 255 - mean) / std per channel, no augmentation
    x = task.inputs(x_train[:2])
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (x_train[:2].float() / 255 - mean) / std)
