"""Batches, augmentation and the ``forward_loop`` callables that calibration, evaluation and
capture share, so data never enters the algorithms' signatures."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from codesign.data.datasets import Dataset, DataSplit
from codesign.data.streamed import StreamedSplit
from codesign.data.subsets import stratified_indices
from codesign.errors import DataError

ForwardLoop = Callable[[nn.Module], None]


def batches(
    split: DataSplit,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) CPU mini-batches of a preloaded or streamed split, unaugmented;
    the last one may be smaller. The consumer moves them to its device."""
    return split.batches(batch_size, shuffle=shuffle, generator=generator)


def training_batches(
    dataset: Dataset, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented (images, labels) CPU batches of ``dataset.train``.

    Preloaded splits: :func:`augment` (padded random crop, flip) on each batch, drawn from
    ``generator``; streamed splits: their loader's random resized crop and flip, seeded from
    ``generator`` (:meth:`codesign.data.streamed.StreamedSplit.batches`).
    """
    train = dataset.train
    if isinstance(train, StreamedSplit):
        yield from train.batches(batch_size, shuffle=True, generator=generator, augmented=True)
        return
    for images, labels in batches(train, batch_size, shuffle=True, generator=generator):
        pad, flip = dataset.pad_augment, dataset.flip_augment
        yield augment(images, pad=pad, flip=flip, generator=generator), labels


def augment(
    images: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels and random horizontal flip, per sample.

    Vectorised with one gather instead of torchvision's per-sample transforms: on 2 cores the
    per-image PIL pipeline costs more than the training step of a ResNet-20.
    """
    n, c, h, w = images.shape
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator)
        rows = (torch.arange(h).view(1, h, 1) + dy).expand(n, h, w)
        cols = (torch.arange(w).view(1, 1, w) + dx).expand(n, h, w)
        flat = (rows * (w + 2 * pad) + cols).view(n, 1, h * w).expand(n, c, h * w)
        images = padded.flatten(2).gather(2, flat).view(n, c, h, w)
    if flip:
        mirrored = torch.rand(n, generator=generator) < 0.5
        images = torch.where(mirrored.view(n, 1, 1, 1), images.flip(3), images)
    return images


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer; the CPU for a module without
    tensors or a plain callable (a forward loop may feed any function of a batch)."""
    if isinstance(model, nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


def make_forward_loop(
    split: DataSplit,
    batch_size: int = 256,
    samples: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> ForwardLoop:
    """A callable that runs ``split`` through a model in batches of ``batch_size``, each batch
    moved to ``device`` (default: the device of the model it is given).

    With ``samples``, only a seeded class-stratified sample of that many images (the one
    ``Dataset.calibration_set`` draws for the same seed), never the first ones.
    """
    if (samples is not None and samples < 1) or len(split) == 0:
        raise DataError("the calibration/capture set is empty: give at least one sample")
    data = split
    if samples is not None and samples < len(split):
        data = split.select(stratified_indices(split.labels, samples, seed, "calibration"))

    def forward_loop(model: nn.Module) -> None:
        target = model_device(model) if device is None else torch.device(device)
        with torch.no_grad():
            for images, _ in batches(data, batch_size):
                model(images.to(target, non_blocking=True))

    return forward_loop


@torch.no_grad()
def correct_per_image(
    model: nn.Module,
    split: DataSplit,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Whether ``model`` classifies each image of ``split`` right: bool [N], in split order,
    computed on ``device`` (default: the model's) and left there (what paired tests between
    models read)."""
    target = model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    try:
        hits = [
            model(images.to(target, non_blocking=True)).argmax(1)
            == labels.to(target, non_blocking=True)
            for images, labels in batches(split, batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(hits)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: DataSplit,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> dict[str, float | int]:
    """Top-1 accuracy in percent on ``split``: ``{"top1", "correct", "samples"}``; batches
    run on ``device`` (default: the model's), the count stays there until the end."""
    target = model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=target)
    try:
        for images, labels in batches(split, batch_size):
            predicted = model(images.to(target, non_blocking=True)).argmax(1)
            correct += (predicted == labels.to(target, non_blocking=True)).sum()
    finally:
        model.train(was_training)
    count = int(correct)
    return {"top1": 100.0 * count / len(split), "correct": count, "samples": len(split)}


@torch.no_grad()
def logits_of(
    model: nn.Module,
    split: DataSplit,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The model's outputs on every image of ``split``, in split order: [N, classes], on
    ``device`` (default: the model's)."""
    target = model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    try:
        return torch.cat(
            [
                model(images.to(target, non_blocking=True))
                for images, _ in batches(split, batch_size)
            ]
        )
    finally:
        model.train(was_training)
