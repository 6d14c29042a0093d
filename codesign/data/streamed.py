"""Streamed splits: images decoded batch by batch by a ``torch.utils.data.DataLoader``.

For data that does not fit in memory (ImageNet, CIFAR-10 upscaled to 224): a
:class:`StreamedSplit` holds only its labels and where each image comes from (an ImageFolder
index or CIFAR-10's uint8 array), so subsets are drawn from the labels without decoding a
single image. It offers what a preloaded :class:`codesign.data.datasets.Split` offers
(``len``, ``labels``, ``shape``, ``select``, ``batches``), so the forward loops, evaluation,
calibration, capture and training take either.

Transforms are torchvision's reference ones. Evaluation: resize the shorter side to
``image_size * 256 / 224`` and centre-crop ``image_size`` (the same resize the preloaded path
applies on load), or the image as stored when no size is given; training: ``RandomResizedCrop``
and a random horizontal flip. Both end with ``ToTensor`` and ``Normalize``, which compute the
same float32 values as the preloaded path's normalisation, so a streamed split and a
preloaded one evaluate identically.

Training augmentation draws its randomness per sample from a seed derived from (the epoch's
seed, the sample's index), so the batches a seeded epoch yields do not depend on the number
of worker processes: ``--workers`` changes speed, never numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from codesign.data.folders import (
    FLOAT32_BYTES,
    capped_indices,
    index_folder,
    open_cifar10,
    split_dirs,
)
from codesign.data.splits import Split
from codesign.data.subsets import stream_seed
from codesign.errors import DataError

# torchvision's reference evaluation: shorter side to 256, centre crop 224.
EVAL_RESIZE_RATIO = 256 / 224
# Worker processes when none are asked for: enough to keep a GPU fed on ImageNet JPEGs,
# leaving a core to the training process.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Decoding processes when none are asked for: the usable cores less one, at most
    ``MAX_DEFAULT_WORKERS`` (0, decoding in the calling process, on one core)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(MAX_DEFAULT_WORKERS, (cores or 1) - 1))


@dataclasses.dataclass(frozen=True)
class LoaderSettings:
    """How a streamed split is read: ``workers`` decoding processes (0: in the calling
    process) and ``pin_memory`` (page-locked batches, for fast copies to a CUDA device)."""

    workers: int = 0
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise DataError(f"workers must be 0 or more, got {self.workers}")


def eval_resize_size(image_size: int) -> int:
    """The shorter side images are resized to before the ``image_size`` centre crop.

    >>> eval_resize_size(224), eval_resize_size(32)
    (256, 37)
    """
    return round(image_size * 256 / 224)


class ImageSource(Protocol):
    """Undecoded images of one split, addressed by index."""

    def __len__(self) -> int: ...

    def image(self, index: int) -> Any:
        """The RGB ``PIL.Image`` at ``index``; a DataError when it cannot be decoded."""

    def where(self, index: int) -> str:
        """Where the image at ``index`` comes from, for error messages."""

    def identity(self, indices: torch.Tensor) -> str:
        """sha256 (hex) of which images ``indices`` (int64 [n]) are, without decoding them."""

    def first_size(self) -> tuple[int, int]:
        """(height, width) of the first image, read without decoding the others."""


class FolderSource:
    """Image files listed by torchvision's ``ImageFolder`` (paths and class indices only)."""

    def __init__(self, root: Path, paths: Sequence[str]) -> None:
        self.root = root
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Any:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot decode image {path}: {exc}") from None

    def where(self, index: int) -> str:
        return self.paths[index]

    def identity(self, indices: torch.Tensor) -> str:
        """Relative path and size in bytes of every chosen file: moving the folder keeps the
        digest, replacing a file by one of another size changes it (contents are not read:
        hashing ImageNet's 140 GB would cost more than a study)."""
        hasher = hashlib.sha256()
        for index in indices.tolist():
            path = self.paths[index]
            hasher.update(f"{os.path.relpath(path, self.root)}\t{os.path.getsize(path)}\n".encode())
        return hasher.hexdigest()

    def first_size(self) -> tuple[int, int]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.paths[0]) as image:  # reads the header only
                width, height = image.size
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot decode image {self.paths[0]}: {exc}") from None
        return height, width


class ArraySource:
    """Images held as one uint8 array [N, H, W, 3] (torchvision CIFAR-10's ``data``); only
    the decoding to float happens per batch."""

    def __init__(self, array: np.ndarray, name: str) -> None:
        self.array = array
        self.name = name

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def image(self, index: int) -> Any:
        from PIL import Image

        return Image.fromarray(self.array[index])

    def where(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def identity(self, indices: torch.Tensor) -> str:
        chosen = np.ascontiguousarray(self.array[indices.numpy()])
        hasher = hashlib.sha256(f"{chosen.dtype}{chosen.shape}".encode())
        hasher.update(chosen.tobytes())
        return hasher.hexdigest()

    def first_size(self) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[2])


class _Samples(torch.utils.data.Dataset):
    """(image tensor [3, H, W] float32, label) for position ``k`` of a streamed split; with
    ``seed``, the transform's randomness is seeded per sample (see the module docstring)."""

    def __init__(
        self,
        split: StreamedSplit,
        transform: Callable[[Any], torch.Tensor],
        seed: int | None,
    ) -> None:
        self.source = split.source
        self.indices = split.indices.tolist()
        self.labels = split.labels.tolist()
        self.transform = transform
        self.seed = seed
        self.stored_size = None if split.resize else split.size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        index = self.indices[k]
        image = self.source.image(index)
        if self.stored_size is not None and image.size[::-1] != self.stored_size:
            raise DataError(
                f"image {self.source.where(index)} is {image.size[1]}x{image.size[0]}, not "
                f"{self.stored_size[0]}x{self.stored_size[1]} like the first one: give an image "
                "size (--image-size, [data] image_size) to resize every image"
            )
        if self.seed is None:
            return self.transform(image), self.labels[k]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, str(index)))
            return self.transform(image), self.labels[k]


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedSplit:
    """Images of ``source`` at ``indices`` (int64 [N]) with their ``labels`` (int64 [N]),
    decoded per batch into normalised float32 [B, 3, H, W] with (H, W) = ``size``.

    ``resize``: evaluation resizes the shorter side to ``size * 256 / 224`` and centre-crops
    ``size`` (False: images are used as stored, and must all be ``size``).
    """

    source: ImageSource
    indices: torch.Tensor
    labels: torch.Tensor
    size: tuple[int, int]
    resize: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    loader: LoaderSettings = LoaderSettings()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """[N, C, H, W] of the split as the batches deliver it."""
        return (len(self), 3, *self.size)

    def select(self, indices: torch.Tensor) -> StreamedSplit:
        """The samples at ``indices`` (int64 [n]), in that order; nothing is decoded."""
        return dataclasses.replace(self, indices=self.indices[indices], labels=self.labels[indices])

    def eval_transform(self) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms

        steps: list[Any] = []
        if self.resize:
            steps += [
                transforms.Resize(eval_resize_size(self.size[0])),
                transforms.CenterCrop(self.size),
            ]
        steps += [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        return transforms.Compose(steps)

    def train_transform(self) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms

        return transforms.Compose(
            [
                transforms.RandomResizedCrop(self.size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(self.mean, self.std),
            ]
        )

    def transform_record(self) -> dict[str, Any]:
        """What the transforms do, for cache keys."""
        return {
            "size": list(self.size),
            "eval": "resize-centre-crop" if self.resize else "as-stored",
            "eval_resize_ratio": EVAL_RESIZE_RATIO,
            "train": "random-resized-crop+horizontal-flip",
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def identity(self) -> str:
        """sha256 (hex) of which images the split holds, in order (see the source)."""
        return self.source.identity(self.indices)

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the whole split decoded to float32."""
        count, channels, height, width = self.shape
        return count * channels * height * width * FLOAT32_BYTES

    def preload(self, batch_size: int = 256) -> Split:
        """The split decoded once into a preloaded :class:`Split` (evaluation transforms):
        the same tensors its batches yield, read from memory on every later pass."""
        pairs = list(self.batches(batch_size))
        return Split(torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs]))

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augmented: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images float32 [B, 3, H, W], labels int64 [B]) CPU batches, the last one
        possibly smaller; pinned when ``loader.pin_memory``. ``shuffle`` draws the order from
        ``generator``; ``augmented`` applies the training transforms, seeded per sample from
        one draw of ``generator``."""
        count = len(self)
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        seed = None
        if augmented:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
        transform = self.train_transform() if augmented else self.eval_transform()
        loader = torch.utils.data.DataLoader(
            _Samples(self, transform, seed),
            batch_size=batch_size,
            sampler=order.tolist(),
            num_workers=self.loader.workers,
            pin_memory=self.loader.pin_memory,
        )
        try:
            yield from loader
        except DataError as exc:
            # A worker's error arrives wrapped with its traceback: keep the one line.
            raise DataError(str(exc).strip().splitlines()[-1].removeprefix(_WRAPPED)) from None


_WRAPPED = f"{DataError.__module__}.{DataError.__qualname__}: "


def _split(
    source: ImageSource,
    labels: torch.Tensor,
    keep: torch.Tensor,
    image_size: int | None,
    normalisation: tuple[tuple[float, ...], tuple[float, ...]],
    loader: LoaderSettings,
) -> StreamedSplit:
    size = (image_size, image_size) if image_size else source.first_size()
    mean, std = normalisation
    return StreamedSplit(source, keep, labels[keep], size, bool(image_size), mean, std, loader)


def streamed_imagefolder(
    base: Path,
    image_size: int | None,
    max_train: int | None,
    max_test: int | None,
    seed: int,
    normalisation: tuple[tuple[float, ...], tuple[float, ...]],
    loader: LoaderSettings,
) -> tuple[StreamedSplit, StreamedSplit, int]:
    """(train, test, number of classes) of ``base/train`` and ``base/test`` (or ``val``),
    indexed from the file listing only; caps as the preloaded path draws them.
    ``normalisation``: (mean, std) per channel."""
    train_dir, test_dir = split_dirs(base)
    train_paths, train_labels, classes = index_folder(train_dir)
    test_paths, test_labels, _ = index_folder(test_dir, classes)
    splits = []
    for directory, paths, labels, limit in (
        (train_dir, train_paths, train_labels, max_train),
        (test_dir, test_paths, test_labels, max_test),
    ):
        if not paths:
            raise DataError(f"{directory} has no images (check the path and its layout)")
        keep = capped_indices(labels, limit, seed, f"cap:{directory.name}", len(classes))
        source = FolderSource(directory, paths)
        splits.append(_split(source, labels, keep, image_size, normalisation, loader))
    return splits[0], splits[1], len(classes)


def streamed_cifar10(
    root: str | Path,
    download: bool,
    image_size: int | None,
    normalisation: tuple[tuple[float, ...], tuple[float, ...]],
    loader: LoaderSettings,
) -> tuple[StreamedSplit, StreamedSplit]:
    """torchvision CIFAR-10's (train, test), converted to float per batch (at ``image_size``,
    e.g. 224 for an ImageNet model, where the whole float split would not fit in memory)."""
    splits = []
    for train in (True, False):
        data = open_cifar10(Path(root), train, download)
        labels = torch.tensor(data.targets, dtype=torch.long)
        source = ArraySource(data.data, f"cifar10-{'train' if train else 'test'}")
        keep = torch.arange(len(labels))
        splits.append(_split(source, labels, keep, image_size, normalisation, loader))
    return splits[0], splits[1]
