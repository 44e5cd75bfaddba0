"""scikit-learn's bundled UCI handwritten digits (1,797 images of 8x8, values 0..16): the embedded default
that needs no download. The dataset has no official test split, so a fixed permutation (independent of the
run's seed) holds out the last ``test_fraction`` as the test set."""

from __future__ import annotations

import numpy as np
import torch


def load_digits_dataset(test_fraction: float = 0.2) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)  # same uint8 scale as MNIST
    labels = bunch.target.astype(np.int64)
    order = np.random.RandomState(20181231).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    train, test = order[: len(order) - n_test], order[len(order) - n_test:]
    return {
        "train": (torch.from_numpy(images[train]), torch.from_numpy(labels[train])),
        "test": (torch.from_numpy(images[test]), torch.from_numpy(labels[test])),
    }
