"""The embedded digits data: read without importing scikit-learn, identical to sklearn's own loader."""

import numpy as np
import pytest

from optbench.data import digits


def test_bundled_csv_equals_sklearn_load_digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    pixels, labels = digits._bundled_digits()
    bunch = sklearn_datasets.load_digits()
    np.testing.assert_array_equal(pixels, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)


def test_split_is_fixed_and_on_the_mnist_scale():
    first, second = digits.load_digits_dataset(), digits.load_digits_dataset()
    assert [len(first[s][0]) for s in ("train", "test")] == [1438, 359]
    assert first["train"][0].max().item() == 255 and first["train"][0].dtype.is_floating_point is False
    assert all(np.array_equal(first[s][1].numpy(), second[s][1].numpy()) for s in ("train", "test"))
