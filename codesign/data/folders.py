"""ImageFolder layouts without decoding: the split folders, each image's path and label, the
seeded caps, and whether decoding a split whole would fit in memory.

Both the preloaded and the streamed path read folders through here, so they see the same
images in the same order with the same labels, and a cap keeps the same images in both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from codesign.data.subsets import stratified_indices
from codesign.errors import DataError

# Decoding more than this share of the machine's memory into one float32 tensor is refused
# before any decoding (the process would swap or be killed hours into a run).
PRELOAD_MEMORY_SHARE = 0.5
FLOAT32_BYTES = 4


def split_dirs(base: Path) -> tuple[Path, Path]:
    """``base/train`` and ``base/test`` (or ``base/val``); a DataError when they are missing."""
    if not base.is_dir():
        raise DataError(f"data directory not found: {base} (imagefolder:DIR needs DIR/train)")
    train_dir = base / "train"
    test_dir = next((base / n for n in ("test", "val") if (base / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataError(
            f"{base} must contain train/ and test/ (or val/) sub-folders in ImageFolder layout"
        )
    return train_dir, test_dir


def index_folder(
    root: Path, classes: list[str] | None = None
) -> tuple[list[str], torch.Tensor, list[str]]:
    """(image paths, labels int64 [N], class names) of an ImageFolder split, from the file
    listing only; ``classes``: the class folders the split must have (the training split's)."""
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(
            f"cannot read image folder {root}: {' '.join(str(exc).split())} (put each class's "
            f"images in {root}/<class>/, as .png, .jpg or another image format)"
        ) from None
    if classes is not None and folder.classes != classes:
        raise DataError(
            f"{root} has classes {folder.classes[:5]}... but the training split has "
            f"{classes[:5]}...; both splits need the same class folders"
        )
    paths = [path for path, _ in folder.samples]
    return paths, torch.tensor(folder.targets, dtype=torch.long), folder.classes


def capped_indices(
    labels: torch.Tensor, limit: int | None, seed: int, purpose: str, num_classes: int
) -> torch.Tensor:
    """Sorted indices (int64) of a seeded class-stratified sample of ``limit`` samples (all
    of them when ``limit`` is None or not smaller): chosen before decoding, so a capped
    ImageNet split never has to fit in memory whole."""
    if limit is None or limit >= len(labels):
        return torch.arange(len(labels))
    return stratified_indices(labels, limit, seed, purpose, num_classes).sort().values


def physical_memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(where: str, count: int, height: int, width: int) -> None:
    """Refuse, before decoding, to preload ``count`` RGB images of ``height`` x ``width`` as
    float32 when that takes more than ``PRELOAD_MEMORY_SHARE`` of physical memory."""
    memory = physical_memory_bytes()
    needed = count * 3 * height * width * FLOAT32_BYTES
    if memory is None or needed <= PRELOAD_MEMORY_SHARE * memory:
        return
    gib = 2**30
    raise DataError(
        f"{where}: preloading {count} images of 3x{height}x{width} takes "
        f"{needed / gib:.1f} GiB as float32, more than half of this machine's "
        f"{memory / gib:.1f} GiB: stream it (--stream, or [data] stream = true) or load a "
        "sample (max_train_samples / max_test_samples)"
    )


def open_cifar10(root: Path, train: bool, download: bool) -> Any:
    """torchvision's CIFAR10 split under ``root``; a DataError saying where it must be (or
    that ``--download`` fetches it) when it is missing."""
    from torchvision.datasets import CIFAR10

    try:
        return CIFAR10(str(root), train=train, download=download)
    except RuntimeError as exc:
        raise DataError(
            f"CIFAR-10 not found under {root}: {exc} (pass --download to fetch it, or point "
            "cifar10:DIR at the folder holding cifar-10-batches-py)"
        ) from None
