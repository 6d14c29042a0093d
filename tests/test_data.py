import numpy as np
import pytest
import torch

from codesign.data import Split, augment, load_dataset, make_forward_loop
from codesign.data.subsets import class_quotas, stratified_indices
from codesign.errors import DataError

from .conftest import CIFAR_SUBSET, needs_shared


def test_digits_split_is_fixed_and_stratified():
    first, second = load_dataset("digits"), load_dataset("digits")
    assert len(first.train) + len(first.validation) == 1437 and len(first.test) == 360
    assert len(first.validation) == round(0.1 * 1437)
    assert torch.equal(first.test.images, second.test.images)
    assert torch.equal(first.validation.images, second.validation.images)
    assert torch.bincount(first.test.labels).min() >= 35


def _rows(split) -> set[bytes]:
    return {row.numpy().tobytes() for row in split.images.flatten(1)}


def test_validation_is_held_out_of_training_and_calibration():
    data = load_dataset("digits", validation_fraction=0.2, subset_seed=3)
    validation = _rows(data.validation)
    assert not validation & _rows(data.train)
    calibration, info = data.calibration_set(400)
    assert not validation & _rows(calibration)
    assert info.size == 400 and sum(info.per_class) == 400
    # Class shares of the carved validation split follow the training split's (within one).
    whole = torch.bincount(torch.cat([data.train.labels, data.validation.labels]), minlength=10)
    expected = whole.double() * len(data.validation) / whole.sum()
    held = torch.bincount(data.validation.labels, minlength=10).double()
    assert (held - expected).abs().max() < 1.0


def test_subsets_are_seeded_and_independent_per_purpose():
    data = load_dataset("digits")
    first, first_info = data.calibration_set(100)
    again, again_info = data.calibration_set(100)
    assert torch.equal(first.images, again.images) and first_info == again_info
    _, capture_info = data.capture_set(100)
    other = load_dataset("digits", subset_seed=1)
    assert other.calibration_set(100)[1].digest != first_info.digest
    assert capture_info.digest != first_info.digest


def test_stratified_sample_known_counts_and_members():
    # 3 classes of unequal size: 6, 3 and 1 samples.
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    assert class_quotas(labels, 7, 3).tolist() == [3, 3, 1]  # class 2 runs out, 0 takes more
    assert class_quotas(labels, 5, 3).tolist() == [2, 2, 1]
    assert class_quotas(labels, 5, 3, balanced=False).tolist() == [3, 2, 0]
    for seed in range(20):
        picked = stratified_indices(labels, 5, seed, "calibration", 3)
        assert torch.bincount(labels[picked], minlength=3).tolist() == [2, 2, 1]
        assert picked.unique().numel() == 5  # no repeats
    # Every member of a class is picked sometimes: uniform within the class, not a prefix.
    seen = torch.cat([stratified_indices(labels, 5, s, "x", 3) for s in range(50)]).unique()
    assert seen.tolist() == list(range(10))
    everything = stratified_indices(labels, 99, 0, "x", 3)
    assert sorted(everything.tolist()) == list(range(10))


def test_forward_loop_samples_are_stratified_not_a_prefix():
    sorted_split = Split(torch.arange(40.0).view(40, 1, 1, 1), torch.arange(40) // 10)
    seen = []
    make_forward_loop(sorted_split, batch_size=8, samples=8)(lambda x: seen.append(x))
    labels = torch.cat(seen).flatten().long() // 10
    assert torch.bincount(labels, minlength=4).tolist() == [2, 2, 2, 2]


def test_capped_splits_are_stratified():
    data = load_dataset("digits", max_train=200, max_test=50)
    assert len(data.train) + len(data.validation) == 200 and len(data.test) == 50
    assert torch.bincount(data.test.labels, minlength=10).tolist() == [5] * 10


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
def test_cifar_subset_layout_and_calibration_covers_every_class():
    data = load_dataset(f"imagefolder:{CIFAR_SUBSET}")
    assert (len(data.train) + len(data.validation), len(data.test)) == (5085, 1017)
    assert data.test.images.shape[1:] == (3, 32, 32)
    # The folders are sorted by class: the first 512 training images are all airplanes. The
    # calibration set holds 51 or 52 of each of the ten classes.
    _, calibration = data.calibration_set(512)
    assert calibration.size == 512
    assert set(calibration.per_class) == {51, 52}
    assert sum(data.validation_info.per_class) == 508 and min(data.validation_info.per_class) > 0
