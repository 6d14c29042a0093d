"""Seeded, class-stratified subsets and their provenance.

No subset is ever "the first N" of a split: data sets on disk are often sorted by class (an
ImageFolder lists class after class), so a prefix is a one- or two-class sample. Every subset
here is stratified by class (equal counts per class, or each class's share of the split for
the validation split carved from training data), is drawn with a
generator seeded by (seed, purpose) so that, for instance, calibration and capture draw
independently, and comes with a :class:`SubsetInfo` (size, per-class histogram, digest of the
chosen indices) that results record.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import torch

from codesign.errors import DataError


@dataclasses.dataclass(frozen=True)
class SubsetInfo:
    """What a subset holds: ``size`` samples, ``per_class`` counts in class order, and
    ``digest`` (sha256 prefix of the chosen indices, sorted, as int64) of which ones."""

    size: int
    per_class: tuple[int, ...]
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "per_class": list(self.per_class), "digest": self.digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubsetInfo:
        """The inverse of :meth:`to_dict`; a missing or unknown key is a ``DataError``."""
        if set(data) != {"size", "per_class", "digest"}:
            raise DataError(f"a subset record has keys size, per_class, digest; got {sorted(data)}")
        return cls(int(data["size"]), tuple(int(c) for c in data["per_class"]), str(data["digest"]))


def stream_seed(seed: int, purpose: str) -> int:
    """A 63-bit generator seed derived from (``seed``, ``purpose``).

    >>> stream_seed(0, "calibration") == stream_seed(0, "calibration")
    True
    >>> stream_seed(0, "calibration") != stream_seed(0, "capture")
    True
    """
    digest = hashlib.sha256(f"{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def class_quotas(
    labels: torch.Tensor, count: int, num_classes: int, balanced: bool = True
) -> torch.Tensor:
    """How many of ``count`` samples each class gets (int64 [num_classes]).

    ``balanced``: the same number per class, a class that runs out giving its share to the
    others (water filling), so 512 images of ten classes are 51 or 52 of each however unequal
    the classes are. Otherwise proportional to each class's share of ``labels``. Leftover
    samples go one each to the lower class indices (balanced) or the largest remainders.

    >>> class_quotas(torch.tensor([0, 0, 0, 0, 1, 2, 2]), 5, 3).tolist()
    [2, 1, 2]
    >>> class_quotas(torch.tensor([0, 0, 0, 1, 1, 2]), 4, 3, balanced=False).tolist()
    [2, 1, 1]
    """
    available = torch.bincount(labels, minlength=num_classes)
    count = min(count, int(available.sum()))
    if balanced:
        # The highest per-class level whose capped total still fits in ``count``.
        low, high = 0, int(available.max())
        while low < high:
            level = (low + high + 1) // 2
            if int(torch.minimum(available, torch.tensor(level)).sum()) <= count:
                low = level
            else:
                high = level - 1
        quota = torch.minimum(available, torch.tensor(low))
        room = torch.nonzero(available > quota).squeeze(1)
        quota[room[: count - int(quota.sum())]] += 1
        return quota
    exact = available.to(torch.float64) * count / max(int(labels.numel()), 1)
    floor = exact.floor()
    # Stable sort on the fractional parts: equal remainders go to lower class indices.
    order = torch.sort(-(exact - floor), stable=True).indices
    floor[order[: count - int(floor.sum())]] += 1
    return floor.to(torch.int64)


def stratified_indices(
    labels: torch.Tensor,
    count: int,
    seed: int,
    purpose: str,
    num_classes: int | None = None,
    balanced: bool = True,
) -> torch.Tensor:
    """Indices (int64 [min(count, N)]) of a seeded class-stratified sample of ``labels``, with
    per-class counts from :func:`class_quotas`.

    Within each class the samples are a uniform random choice; the returned order is a random
    permutation, so consecutive batches mix classes. ``count >= N`` returns every index, still
    in a seeded random order.
    """
    total = int(labels.numel())
    if count < 1:
        raise DataError(f"a {purpose} subset needs at least one sample, got {count}")
    if total == 0:
        raise DataError(f"cannot draw a {purpose} subset from an empty split")
    classes = num_classes if num_classes is not None else int(labels.max()) + 1
    generator = torch.Generator().manual_seed(stream_seed(seed, purpose))
    permutation = torch.randperm(total, generator=generator)
    if count >= total:
        return permutation
    quota = class_quotas(labels, count, classes, balanced)
    shuffled = labels[permutation]
    by_class = torch.sort(shuffled, stable=True)
    starts = torch.cumsum(torch.bincount(shuffled, minlength=classes), 0)
    starts = starts - torch.bincount(shuffled, minlength=classes)
    rank = torch.arange(total) - starts[by_class.values]
    keep = by_class.indices[rank < quota[by_class.values]]
    return permutation[keep.sort().values]


def subset_info(labels: torch.Tensor, indices: torch.Tensor, num_classes: int) -> SubsetInfo:
    """The :class:`SubsetInfo` of ``indices`` into a split with ``labels``."""
    chosen = labels[indices]
    digest = hashlib.sha256(indices.sort().values.to(torch.int64).numpy().tobytes()).hexdigest()
    return SubsetInfo(
        size=int(indices.numel()),
        per_class=tuple(int(c) for c in torch.bincount(chosen, minlength=num_classes)),
        digest=digest[:16],
    )


def rank_shard(labels: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Positions (int64, ascending) of rank ``rank``'s share of a subset with ``labels``
    (in the subset's order): the subset ordered by class (stable), then every
    ``world_size``-th from ``rank``. The shards partition the subset, their sizes differ by
    at most one, and so do each class's counts in them; each shard keeps the subset's own
    (seeded, class-mixed) order. One process (``world_size`` 1) holds every position.

    >>> rank_shard(torch.tensor([0, 1, 0, 1, 1, 0]), 0, 2).tolist()
    [0, 3, 5]
    >>> rank_shard(torch.tensor([0, 1, 0, 1, 1, 0]), 1, 2).tolist()
    [1, 2, 4]
    """
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is not one of {world_size} ranks")
    if labels.numel() < world_size:
        raise DataError(
            f"{labels.numel()} calibration samples cannot be shared by {world_size} processes: "
            f"give at least {world_size} (--calib-samples), or run fewer processes"
        )
    by_class = torch.sort(labels, stable=True).indices
    return by_class[rank::world_size].sort().values
