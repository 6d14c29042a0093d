import numpy as np
import pytest
import torch

from codesign.data import augment, load_dataset, make_forward_loop
from codesign.errors import DataError

from .conftest import CIFAR_SUBSET, needs_shared


def test_digits_split_is_fixed_and_stratified():
    first, second = load_dataset("digits"), load_dataset("digits")
    assert len(first.train) == 1437 and len(first.test) == 360
    assert torch.equal(first.test.images, second.test.images)
    assert torch.bincount(first.test.labels).min() >= 35


def test_augment_keeps_content_and_shape():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = augment(images, pad=0, flip=False)
    assert torch.equal(out, images)
    shifted = augment(images, pad=1, flip=True, generator=torch.Generator().manual_seed(1))
    assert shifted.shape == images.shape


def test_npz_with_nan_is_rejected(tmp_path):
    x = np.zeros((4, 1, 8, 8), np.float32)
    x[2, 0, 0, 0] = np.nan
    np.savez(
        tmp_path / "d.npz", x_train=x, y_train=np.zeros(4), x_test=x[:2] * 0, y_test=np.zeros(2)
    )
    with pytest.raises(DataError, match="NaN"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_bad_specs(tmp_path):
    with pytest.raises(DataError, match="unknown data spec"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")


def test_empty_calibration_set():
    with pytest.raises(DataError, match="empty"):
        make_forward_loop(load_dataset("digits").train, samples=0)


@needs_shared
def test_cifar_subset_layout():
    data = load_dataset(f"imagefolder:{CIFAR_SUBSET}")
    assert (len(data.train), len(data.test)) == (5085, 1017)
    assert data.test.images.shape[1:] == (3, 32, 32)
