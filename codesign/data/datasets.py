"""Data sets: the embedded digits, CIFAR-10, any ImageFolder, npz; preloaded or streamed.

By default a data set is decoded once into memory (CIFAR-10 is 180 MB as uint8), which makes
every later pass (calibration, evaluation, capture, fine-tuning epochs) a tensor slice instead
of a PNG decode per image per epoch. With ``stream=True``, ImageFolder and CIFAR-10 splits are
decoded per batch by a DataLoader instead (:mod:`codesign.data.streamed`), for data larger than
memory; both kinds of split offer the same :class:`DataSplit` interface, and a preloaded split
too large for memory is refused before decoding, with a pointer to streaming.

Streaming is asked for, never switched on by size: its training augmentation (random resized
crops) differs from the preloaded one (padded crops), so the same recipe must not change its
numbers because a folder grew past a threshold.

Data specs (the CLI's ``--data``):
- ``digits``: ``sklearn.datasets.load_digits`` (ships inside scikit-learn), 8x8 grey images,
  a fixed stratified split (seed 0, 20 % test).
- ``cifar10:DIR``: torchvision ``CIFAR10(DIR)``, downloaded only when ``download=True``.
- ``imagefolder:DIR``: ``DIR/train`` for calibration/fine-tuning, ``DIR/test`` (or ``DIR/val``)
  for evaluation, torchvision ``ImageFolder`` layout.
- ``npz:FILE``: arrays ``x_train, y_train, x_test, y_test`` (NHWC or NCHW, uint8 or float).

Every data set then holds out a validation split carved from ``train`` (seeded,
class-stratified, ``validation_fraction`` of it): calibration and fine-tuning use the rest of
``train``, the search and any model selection read ``validation``, and ``test`` is only ever
reported. Every subset (calibration, capture, sensitivity, a capped split) is a seeded,
class-stratified sample (:mod:`codesign.data.subsets`), never a prefix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codesign.config import DEFAULT_VALIDATION_FRACTION
from codesign.data.folders import (
    capped_indices,
    check_fits_in_memory,
    index_folder,
    open_cifar10,
    split_dirs,
)
from codesign.data.npz import read_npz_splits
from codesign.data.splits import DataSplit, Split, stratified
from codesign.data.streamed import (
    FolderSource,
    LoaderSettings,
    StreamedSplit,
    eval_resize_size,
    streamed_cifar10,
    streamed_imagefolder,
)
from codesign.data.subsets import SubsetInfo, stratified_indices, subset_info
from codesign.errors import DataError

# ImageNet statistics (torchvision's pretrained models); the shared CIFAR ResNet-20 checkpoint
# was trained with them too, so every RGB data set here is normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = IMAGENET_MEAN, IMAGENET_STD
# A streamed subset up to this size (float32) is decoded once and held: 1,782 images at 224.
SUBSET_PRELOAD_BYTES = 2**30


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A named pair of splits with what a model needs to know about them."""

    name: str
    train: DataSplit
    test: DataSplit
    num_classes: int
    # Training augmentation of preloaded splits (streamed ones crop and flip in their loader).
    flip_augment: bool  # horizontal flips preserve the label (not for digits)
    pad_augment: int  # random-crop padding in pixels for training augmentation
    # Held out of the training split (see the module docstring); None until carved.
    validation: DataSplit | None = None
    validation_info: SubsetInfo | None = None
    subset_seed: int = 0

    @property
    def in_channels(self) -> int:
        return int(self.train.shape[1])

    @property
    def streamed(self) -> bool:
        """Whether the splits are decoded per batch (see :mod:`codesign.data.streamed`)."""
        return not isinstance(self.train, Split)

    def calibration_set(self, count: int) -> tuple[DataSplit, SubsetInfo]:
        """``count`` training images (never validation) for calibration and SparseGPT."""
        return self._subset(self.train, count, "calibration")

    def capture_set(self, count: int) -> tuple[DataSplit, SubsetInfo]:
        """``count`` validation images whose tensors the hardware model measures."""
        return self._subset(self._held_out(), count, "capture")

    def sensitivity_set(self, count: int) -> tuple[DataSplit, SubsetInfo]:
        """``count`` validation images on which the search measures per-layer drops."""
        return self._subset(self._held_out(), count, "sensitivity")

    def _subset(self, split: DataSplit, count: int, purpose: str) -> tuple[DataSplit, SubsetInfo]:
        """A stratified subset; a streamed one small enough is decoded once (calibration and
        the search run it through the model many times), else it stays streamed."""
        subset, info = stratified(split, count, self.subset_seed, purpose, self.num_classes)
        if isinstance(subset, StreamedSplit) and subset.decoded_bytes <= SUBSET_PRELOAD_BYTES:
            return subset.preload(), info
        return subset, info

    def _held_out(self) -> DataSplit:
        if self.validation is None:
            raise DataError("this data set has no validation split: load it with load_dataset")
        return self.validation


def carve_validation(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """Move a seeded class-stratified ``fraction`` of ``dataset.train`` into ``validation``;
    the rest stays the training split (calibration and fine-tuning never see validation)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must lie in (0, 1), got {fraction}")
    train = dataset.train
    count = max(1, round(fraction * len(train)))
    if count >= len(train):
        raise DataError(
            f"{dataset.name}: holding out {count} of {len(train)} training samples for "
            "validation leaves none to train on; give more training data or a smaller fraction"
        )
    # Proportional: the validation split keeps the training split's class balance.
    held = stratified_indices(
        train.labels, count, seed, "validation", dataset.num_classes, balanced=False
    )
    is_held = torch.zeros(len(train), dtype=torch.bool)
    is_held[held] = True
    rest = torch.nonzero(~is_held).squeeze(1)  # training order is shuffled per epoch anyway
    return dataclasses.replace(
        dataset,
        train=train.select(rest),
        validation=train.select(held),
        validation_info=subset_info(train.labels, held, dataset.num_classes),
        subset_seed=seed,
    )


def _normalise(images_uint8_nchw: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    images = images_uint8_nchw.float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return images.sub_(mean_t).div_(std_t)


def _checked(split: DataSplit, where: str) -> DataSplit:
    if len(split) == 0:
        raise DataError(f"{where} has no samples (check the path and its layout)")
    # A streamed split is decoded per batch: an undecodable file is reported when reached.
    if isinstance(split, Split) and not torch.isfinite(split.images).all():
        bad = int((~torch.isfinite(split.images)).flatten(1).any(1).sum())
        raise DataError(f"{where} contains NaN or Inf values in {bad} samples; clean the data")
    return split


def load_digits_dataset() -> Dataset:
    """sklearn's 1,797 8x8 handwritten digits; 1,437 train / 360 test, stratified, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = digits.images.astype(np.float32) / 16.0  # pixel values are 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    mean, std = float(x_train.mean()), float(x_train.std())

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        images = (torch.from_numpy(x).unsqueeze(1) - mean) / std
        return Split(images.contiguous(), torch.from_numpy(y).long())

    return Dataset("digits", split(x_train, y_train), split(x_test, y_test), 10, False, 1)


def _resizer(image_size: int) -> Callable[[Any], Any]:
    """PIL image -> PIL image: shorter side to ``image_size * 256 / 224``, centre crop
    ``image_size`` (the streamed path's evaluation transform, before ``ToTensor``)."""
    from torchvision.transforms import CenterCrop, Compose, Resize

    return Compose([Resize(eval_resize_size(image_size)), CenterCrop(image_size)])


def _decode_files(paths: list[str], image_size: int | None = None) -> torch.Tensor:
    """uint8 [N, 3, H, W]; with ``image_size`` every image is resized (shorter side to
    image_size * 256 / 224) and centre-cropped to image_size, the usual ImageNet evaluation."""
    from PIL import Image, UnidentifiedImageError

    resize = _resizer(image_size) if image_size is not None else None

    def decode(path: str) -> np.ndarray:
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                return np.asarray(resize(rgb) if resize else rgb, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(
                f"cannot decode image {path}: {exc}; replace or remove the file"
            ) from None

    arrays = [decode(path) for path in paths]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"images have different sizes {sorted(shapes)[:3]}; resize them to one size first "
            "(a recipe's data.image_size does it on load)"
        )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _first_size(path: str) -> tuple[int, int]:
    """(height, width) of one image, from its header."""
    return FolderSource(Path(path).parent, [path]).first_size()


def load_imagefolder_dataset(
    root: str | Path,
    image_size: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
) -> Dataset:
    """``DIR/train`` and ``DIR/test`` (or ``DIR/val``); ``image_size`` resizes and centre-crops
    (needed for ImageNet, whose images differ in size); ``max_train``/``max_test`` keep a
    seeded class-stratified sample of that many images. Refused before decoding when the
    decoded splits would take more than half the machine's memory (stream them instead)."""
    base = Path(root)
    train_dir, test_dir = split_dirs(base)
    train_paths, train_labels, classes = index_folder(train_dir)
    test_paths, test_labels, _ = index_folder(test_dir, classes)
    keep_train = capped_indices(train_labels, max_train, seed, "cap:train", len(classes))
    keep_test = capped_indices(test_labels, max_test, seed, f"cap:{test_dir.name}", len(classes))
    if len(keep_train) and len(keep_test):
        height, width = (image_size, image_size) if image_size else _first_size(train_paths[0])
        check_fits_in_memory(f"imagefolder:{base}", len(keep_train) + len(keep_test), height, width)

    def split(paths: list[str], labels: torch.Tensor, keep: torch.Tensor) -> Split:
        chosen = [paths[i] for i in keep.tolist()]
        images = _normalise(_decode_files(chosen, image_size), IMAGENET_MEAN, IMAGENET_STD)
        return Split(images, labels[keep])

    train = split(train_paths, train_labels, keep_train)
    test = split(test_paths, test_labels, keep_test)
    return Dataset(f"imagefolder:{base}", train, test, len(classes), True, 4)


def load_cifar10_dataset(
    root: str | Path, download: bool = False, image_size: int | None = None
) -> Dataset:
    """torchvision CIFAR-10 under ``root``; ``image_size`` resizes and centre-crops every
    image as :func:`load_imagefolder_dataset` does (e.g. 224 for an ImageNet model)."""
    from PIL import Image

    splits = []
    for train in (True, False):
        data = open_cifar10(Path(root), train, download)
        array = data.data
        if image_size:
            check_fits_in_memory(f"cifar10:{root}", len(array), image_size, image_size)
            resize = _resizer(image_size)
            array = np.stack([np.asarray(resize(Image.fromarray(a))) for a in array])
        images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
        splits.append(
            Split(_normalise(images, IMAGENET_MEAN, IMAGENET_STD), torch.tensor(data.targets))
        )
    return Dataset(f"cifar10:{root}", splits[0], splits[1], 10, True, 4)


def load_npz_dataset(path: str | Path) -> Dataset:
    """``npz:FILE``: arrays ``x_train, y_train, x_test, y_test`` (see :mod:`codesign.data.npz`)."""
    train, test, classes = read_npz_splits(path)
    return Dataset(f"npz:{Path(path)}", train, test, classes, False, 0)


DATA_KINDS = ("digits", "cifar10:DIR", "imagefolder:DIR", "npz:FILE")


def load_dataset(
    spec: str,
    download: bool = False,
    *,
    image_size: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    subset_seed: int = 0,
    stream: bool = False,
    loader: LoaderSettings | None = None,
) -> Dataset:
    """Load a data spec (see the module docstring); checks every split is non-empty and finite,
    then holds out ``validation_fraction`` of the training split as ``validation``.

    ``image_size`` applies to ``imagefolder:DIR`` and ``cifar10:DIR`` (see
    :func:`load_imagefolder_dataset`); ``max_train`` / ``max_test`` keep a seeded
    class-stratified sample of each split; ``subset_seed`` seeds those caps, the validation
    split and every later subset. ``stream``: decode ``imagefolder:DIR`` / ``cifar10:DIR``
    per batch with a DataLoader read as ``loader`` says (default: no worker processes, no
    pinning) instead of preloading them (:mod:`codesign.data.streamed`).
    """
    kind, _, location = spec.partition(":")
    if stream:
        dataset = _load_streamed(
            spec, download, image_size, max_train, max_test, subset_seed, loader
        )
    elif kind == "digits" and not location:
        dataset = load_digits_dataset()
    elif kind == "cifar10" and location:
        dataset = load_cifar10_dataset(location, download, image_size)
    elif kind == "imagefolder" and location:
        dataset = load_imagefolder_dataset(location, image_size, max_train, max_test, subset_seed)
    elif kind == "npz" and location:
        dataset = load_npz_dataset(location)
    else:
        raise DataError(f"unknown data spec {spec!r}: use one of {', '.join(DATA_KINDS)}")
    _checked(dataset.train, f"{spec} train split")
    _checked(dataset.test, f"{spec} test split")
    if kind != "imagefolder":
        caps = {"train": max_train, "test": max_test}
        capped = {
            name: stratified(
                getattr(dataset, name), limit, subset_seed, f"cap:{name}", dataset.num_classes
            )[0]
            for name, limit in caps.items()
            if limit is not None and limit < len(getattr(dataset, name))
        }
        dataset = dataclasses.replace(dataset, **capped)
    return carve_validation(dataset, validation_fraction, subset_seed)


def _load_streamed(
    spec: str,
    download: bool,
    image_size: int | None,
    max_train: int | None,
    max_test: int | None,
    seed: int,
    loader: LoaderSettings | None,
) -> Dataset:
    """A data set of streamed splits; horizontal flips are part of their training transform."""
    kind, _, location = spec.partition(":")
    settings = loader or LoaderSettings()
    normalisation = (IMAGENET_MEAN, IMAGENET_STD)
    if kind == "imagefolder" and location:
        base = Path(location)
        train, test, classes = streamed_imagefolder(
            base, image_size, max_train, max_test, seed, normalisation, settings
        )
        return Dataset(f"imagefolder:{base}", train, test, classes, True, 0)
    if kind == "cifar10" and location:
        train, test = streamed_cifar10(location, download, image_size, normalisation, settings)
        return Dataset(f"cifar10:{location}", train, test, 10, True, 0)
    raise DataError(
        f"streaming applies to imagefolder:DIR and cifar10:DIR, not {spec!r}: drop --stream "
        "([data] stream) for data that is loaded into memory"
    )
