"""Streamed splits against the preloaded path on a tiny made-up image folder (and on the
shared CIFAR-10 subset): same images, same labels, same subsets, same top-1."""

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.config import TrainSpec
from codesign.data import (
    LoaderSettings,
    Split,
    StreamedSplit,
    evaluate,
    folders,
    load_dataset,
    make_forward_loop,
    training_batches,
)
from codesign.data.streamed import ArraySource, FolderSource
from codesign.errors import DataError
from codesign.models import create_model
from codesign.train import train

from .conftest import CIFAR_SUBSET, RESNET20_CHECKPOINT, needs_shared

CLASSES = 3


def make_folder(root: Path, sizes: dict[str, list[tuple[int, int]]], seed: int = 0) -> Path:
    """An ImageFolder of random RGB PNGs: per split, one image of each (height, width) in
    ``sizes[split]`` for every class; class c has a brighter channel c (a learnable cue)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, shapes in sizes.items():
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, (h, w) in enumerate(shapes):
                pixels = rng.integers(0, 160, (h, w, 3), dtype=np.uint8)
                pixels[..., c] += 95
                Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    # Mixed sizes: only a resize to one size makes them a batch.
    train = [(20, 24), (24, 20), (22, 22), (26, 30), (21, 23), (20, 20)]
    return make_folder(tmp_path_factory.mktemp("f"), {"train": train, "test": train[:3]})


@pytest.fixture(scope="module")
def uniform(tmp_path_factory) -> Path:
    return make_folder(
        tmp_path_factory.mktemp("u"), {"train": [(16, 16)] * 6, "test": [(16, 16)] * 2}
    )


def _all(split) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = list(split.batches(4))
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


@pytest.mark.parametrize("image_size, which", [(16, "folder"), (None, "uniform")])
def test_streamed_gives_the_preloaded_tensors_labels_and_subsets(
    image_size, which, folder, uniform
):
    root = folder if which == "folder" else uniform
    spec = f"imagefolder:{root}"
    pre = load_dataset(spec, image_size=image_size)
    streamed = load_dataset(spec, image_size=image_size, stream=True)
    assert isinstance(streamed.train, StreamedSplit) and streamed.streamed and not pre.streamed
    assert streamed.train.shape == pre.train.shape and streamed.in_channels == 3
    for name in ("train", "validation", "test"):
        images, labels = _all(getattr(streamed, name))
        # Bit for bit: same resize, and ToTensor + Normalize compute what _normalise does.
        assert torch.equal(images, getattr(pre, name).images)
        assert torch.equal(labels, getattr(pre, name).labels)
    assert streamed.validation_info == pre.validation_info
    assert streamed.calibration_set(5)[1] == pre.calibration_set(5)[1]
    assert streamed.capture_set(2)[1] == pre.capture_set(2)[1]
    model = create_model("resnet8", num_classes=CLASSES).eval()
    assert evaluate(model, streamed.test) == evaluate(model, pre.test)
    seen_pre, seen_streamed = [], []
    make_forward_loop(pre.train, 4, samples=6)(seen_pre.append)
    make_forward_loop(streamed.train, 4, samples=6)(seen_streamed.append)
    assert torch.equal(torch.cat(seen_pre), torch.cat(seen_streamed))


def test_subsets_come_from_labels_and_decode_only_their_images(folder, monkeypatch):
    decoded = []
    image = FolderSource.image
    monkeypatch.setattr(FolderSource, "image", lambda self, i: decoded.append(i) or image(self, i))
    data = load_dataset(f"imagefolder:{folder}", image_size=16, stream=True, max_train=15)
    assert sum(data.validation_info.per_class) == len(data.validation) == 2
    assert torch.bincount(torch.cat([data.train.labels, data.validation.labels])).tolist() == [
        5,
        5,
        5,
    ]
    assert decoded == []  # indexing, capping and carving read no image
    calibration, info = data.calibration_set(6)
    assert info.per_class == (2, 2, 2) and len(decoded) == 6
    # A small subset is decoded once and held; its tensors are the streamed batches'.
    assert isinstance(calibration, Split) and calibration.labels.bincount().tolist() == [2, 2, 2]
    model = create_model("resnet8", num_classes=CLASSES).eval()
    for _ in range(3):
        evaluate(model, calibration)
    assert len(decoded) == 6


def test_training_batches_do_not_depend_on_workers_and_change_per_epoch(uniform):
    def epochs(workers: int) -> list[torch.Tensor]:
        data = load_dataset(
            f"imagefolder:{uniform}", stream=True, loader=LoaderSettings(workers=workers)
        )
        generator = torch.Generator().manual_seed(3)
        return [torch.cat([x for x, _ in training_batches(data, 4, generator)]) for _ in range(2)]

    serial, parallel = epochs(0), epochs(2)
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    assert not torch.equal(serial[0], serial[1])  # a new epoch: new order, crops and flips
    assert serial[0].shape == (16, 3, 16, 16)


def test_training_on_a_streamed_split_is_reproducible_across_worker_counts(uniform):
    spec = TrainSpec(epochs=1, lr=0.05, batch_size=4, seed=1)

    def trained(workers: int) -> dict[str, torch.Tensor]:
        data = load_dataset(
            f"imagefolder:{uniform}", stream=True, loader=LoaderSettings(workers=workers)
        )
        torch.manual_seed(0)
        model = create_model("resnet8", num_classes=CLASSES)
        history = train(model, data, spec, progress=False)
        assert np.isfinite(history["final_loss"]) and history["steps"] == 4
        return model.state_dict()

    first, second = trained(0), trained(1)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_preloaded_training_batches_are_the_augmented_slices():
    # The preloaded path draws exactly what the training loop drew before the interface:
    # one permutation, then augment() on each slice, all from one generator.
    from codesign.data import augment

    data = load_dataset("digits")
    got = list(training_batches(data, 256, torch.Generator().manual_seed(5)))
    generator = torch.Generator().manual_seed(5)
    order = torch.randperm(len(data.train), generator=generator)
    for (images, labels), start in zip(got, range(0, len(data.train), 256), strict=True):
        index = order[start : start + 256]
        expected = augment(data.train.images[index], pad=1, flip=False, generator=generator)
        assert torch.equal(images, expected) and torch.equal(labels, data.train.labels[index])


def test_unequal_sizes_without_image_size_name_the_file(folder):
    data = load_dataset(f"imagefolder:{folder}", stream=True)
    with pytest.raises(DataError, match=r"class\d/\d\d.png is .* give an image size"):
        evaluate(create_model("resnet8", num_classes=CLASSES), data.test)


def test_undecodable_image_is_one_line_from_a_worker(tmp_path):
    root = make_folder(tmp_path, {"train": [(8, 8)] * 3, "test": [(8, 8)]})
    (root / "test" / "class1" / "00.png").write_bytes(b"not a png")
    data = load_dataset(f"imagefolder:{root}", stream=True, loader=LoaderSettings(workers=1))
    with pytest.raises(DataError) as error:
        evaluate(create_model("resnet8", num_classes=CLASSES), data.test)
    message = str(error.value)
    assert message.startswith("cannot decode image ") and "class1/00.png" in message
    assert "\n" not in message


def test_preloading_more_than_memory_points_to_streaming(folder, monkeypatch):
    monkeypatch.setattr(folders, "physical_memory_bytes", lambda: 1000)
    with pytest.raises(DataError, match=r"27 images of 3x16x16 .*--stream"):
        load_dataset(f"imagefolder:{folder}", image_size=16)
    assert len(load_dataset(f"imagefolder:{folder}", image_size=16, stream=True).test) == 9


def test_streaming_data_that_is_preloaded_anyway_is_refused():
    with pytest.raises(DataError, match="streaming applies to imagefolder"):
        load_dataset("digits", stream=True)


def test_array_source_streams_cifar_shaped_arrays():
    # The CIFAR-10 path streams torchvision's uint8 [N, 32, 32, 3] array.
    array = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    split = StreamedSplit(
        ArraySource(array, "x"),
        torch.arange(6),
        labels,
        (32, 32),
        False,
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
    )
    images, got = _all(split.select(torch.tensor([4, 1])))
    expected = torch.from_numpy(array[[4, 1]]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(images, expected) and got.tolist() == [1, 1]
    assert split.identity() != split.select(torch.tensor([1, 0, 2, 3, 4, 5])).identity()
    assert isinstance(Split(images, got).shape, tuple)


@needs_shared
def test_streamed_shared_resnet20_known_answer():
    from codesign.pipeline import load_model

    model, _, _ = load_model(RESNET20_CHECKPOINT)
    data = load_dataset(f"imagefolder:{CIFAR_SUBSET}", stream=True, loader=LoaderSettings(1))
    assert evaluate(model, data.test)["correct"] == 932  # 91.64 %, as preloaded
