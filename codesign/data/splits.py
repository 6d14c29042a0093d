"""The split interface: a preloaded :class:`Split` (one tensor) and what every split offers
(:class:`DataSplit`, which :class:`codesign.data.streamed.StreamedSplit` implements too), and
seeded class-stratified samples of either."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

import torch

from codesign.data.subsets import SubsetInfo, stratified_indices, subset_info


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Normalised images [N, C, H, W] float32 and labels [N] int64, preloaded in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """[N, C, H, W] of the images."""
        return tuple(self.images.shape)

    def select(self, indices: torch.Tensor) -> Split:
        """The samples at ``indices`` (int64 [n]), in that order."""
        return Split(self.images[indices], self.labels[indices])

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) slices of ``batch_size``; the last one may be smaller.
        ``shuffle`` draws the order from ``generator``."""
        count = len(self)
        order = torch.randperm(count, generator=generator) if shuffle else None
        for start in range(0, count, batch_size):
            if order is None:
                yield (
                    self.images[start : start + batch_size],
                    self.labels[start : start + batch_size],
                )
            else:
                index = order[start : start + batch_size]
                yield self.images[index], self.labels[index]


class DataSplit(Protocol):
    """What every consumer of a split uses: a preloaded :class:`Split` or a
    :class:`codesign.data.streamed.StreamedSplit` (decoded per batch by a DataLoader)."""

    labels: torch.Tensor

    def __len__(self) -> int: ...

    @property
    def shape(self) -> tuple[int, ...]:
        """[N, C, H, W] of the images as batches deliver them."""

    def select(self, indices: torch.Tensor) -> DataSplit:
        """The samples at ``indices`` (int64 [n]), in that order."""

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images float32 [B, C, H, W], labels int64 [B]) CPU batches, unaugmented."""


def stratified(
    split: DataSplit, count: int | None, seed: int, purpose: str, num_classes: int
) -> tuple[DataSplit, SubsetInfo]:
    """A seeded class-stratified sample of ``count`` samples of ``split`` (all of them, in a
    seeded order, when ``count`` is None or not smaller) and its :class:`SubsetInfo`."""
    wanted = len(split) if count is None else count
    indices = stratified_indices(split.labels, wanted, seed, purpose, num_classes)
    return split.select(indices), subset_info(split.labels, indices, num_classes)
