"""Batches, augmentation and the ``forward_loop`` callables that calibration, evaluation and
capture share, so data never enters the algorithms' signatures."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from codesign.data.datasets import Split
from codesign.data.subsets import stratified_indices
from codesign.errors import DataError

ForwardLoop = Callable[[nn.Module], None]


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) mini-batches; the last one may be smaller."""
    count = len(split)
    order = torch.randperm(count, generator=generator) if shuffle else None
    for start in range(0, count, batch_size):
        if order is None:
            yield split.images[start : start + batch_size], split.labels[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            yield split.images[index], split.labels[index]


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


def make_forward_loop(
    split: Split, batch_size: int = 256, samples: int | None = None, seed: int = 0
) -> ForwardLoop:
    """A callable that runs ``split`` through a model in batches of ``batch_size``.

    With ``samples``, only a seeded class-stratified sample of that many images (the one
    ``Dataset.calibration_set`` draws for the same seed), never the first ones.
    """
    if (samples is not None and samples < 1) or len(split) == 0:
        raise DataError("the calibration/capture set is empty: give at least one sample")
    data = split
    if samples is not None and samples < len(split):
        data = split.select(stratified_indices(split.labels, samples, seed, "calibration"))

    def forward_loop(model: nn.Module) -> None:
        with torch.no_grad():
            for images, _ in batches(data, batch_size):
                model(images)

    return forward_loop


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 512) -> dict[str, float | int]:
    """Top-1 accuracy in percent on ``split``: ``{"top1", "correct", "samples"}``."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for images, labels in batches(split, batch_size):
            correct += int((model(images).argmax(1) == labels).sum())
    finally:
        model.train(was_training)
    return {"top1": 100.0 * correct / len(split), "correct": correct, "samples": len(split)}


@torch.no_grad()
def logits_of(model: nn.Module, split: Split, batch_size: int = 512) -> torch.Tensor:
    """The model's outputs on every image of ``split``, in split order: [N, classes]."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images) for images, _ in batches(split, batch_size)])
    finally:
        model.train(was_training)
