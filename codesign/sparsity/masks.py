"""Pruning masks as pure tensor functions: magnitude (layer-wise, global, LAMP) and N:M.

A mask is a bool tensor shaped like the weight: True keeps a weight, False removes it.
Nothing here touches modules; ``prune.py`` attaches these masks as parametrizations.

Ties are broken deterministically: among equal magnitudes the weight with the lower flat index
(for global masks: the earlier layer, then the lower index) is removed first, so a level
always removes exactly ``round(level * count)`` weights, the count ``torch.nn.utils.prune``
removes (it also uses Python's ``round``, half to even).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from codesign.errors import SparsityError


@dataclasses.dataclass(frozen=True)
class NMPattern:
    """Keep at most ``n`` of every ``m`` consecutive weights along the reduction dimension."""

    n: int
    m: int

    def __post_init__(self) -> None:
        check_nm(self.n, self.m)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m


@dataclasses.dataclass(frozen=True)
class Unstructured:
    """Remove the fraction ``sparsity`` of weights with the smallest magnitude."""

    sparsity: float

    def __post_init__(self) -> None:
        check_level(self.sparsity)

    def __str__(self) -> str:
        return "unstructured"


Pattern = NMPattern | Unstructured


def check_nm(n: int, m: int) -> None:
    """Raise SparsityError unless ``0 < n < m`` are integers."""
    if (
        isinstance(n, bool)
        or isinstance(m, bool)
        or not isinstance(n, int)
        or not isinstance(m, int)
    ):
        raise SparsityError(f"N:M pattern needs integers, got {n!r}:{m!r} (write e.g. 2:4)")
    if not 0 < n < m:
        raise SparsityError(
            f"invalid N:M pattern {n}:{m}: it keeps N of every M weights, so it needs "
            "0 < N < M (e.g. 2:4 or 1:4)"
        )


def check_level(sparsity: float) -> None:
    """Raise SparsityError unless ``sparsity`` is a number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise SparsityError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise SparsityError(
            f"sparsity {sparsity} is outside [0, 1): give the fraction of weights to remove, "
            "e.g. 0.7 for 70 % (1.0 would remove every weight)"
        )


def parse_pattern(text: str | float) -> Pattern | None:
    """Parse "2:4", "0.7" (or 0.7) or "dense" (returns None).

    >>> parse_pattern("2:4"), parse_pattern("0.7"), parse_pattern("dense")
    (NMPattern(n=2, m=4), Unstructured(sparsity=0.7), None)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Unstructured(float(text))
    if not isinstance(text, str):
        raise SparsityError(f"sparsity must be 'N:M', a fraction or 'dense', got {text!r}")
    value = text.strip()
    if value.lower() == "dense":
        return None
    if ":" in value:
        left, _, right = value.partition(":")
        try:
            n, m = int(left), int(right)
        except ValueError:
            raise SparsityError(
                f"cannot read N:M pattern {text!r}: write two integers like 2:4"
            ) from None
        return NMPattern(n, m)
    try:
        level = float(value)
    except ValueError:
        raise SparsityError(
            f"cannot read sparsity {text!r}: write an N:M pattern (2:4), a fraction in "
            "[0, 1) (0.7) or 'dense'"
        ) from None
    return Unstructured(level)


def _removal_count(level: float, count: int) -> int:
    check_level(level)
    return round(level * count)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the ``round(sparsity * numel)`` smallest-magnitude weights of one tensor.

    weight: any shape -> bool mask of the same shape.

    >>> magnitude_mask(torch.tensor([0.3, -0.1, 0.2, -0.4]), 0.5).tolist()
    [True, False, False, True]
    """
    return global_magnitude_masks([weight], sparsity)[0]


def global_magnitude_masks(weights: Sequence[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """One magnitude threshold across all ``weights``: remove ``round(sparsity * total)``.

    weights: tensors of any shapes -> bool masks of the same shapes, in the same order.

    >>> a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5])
    >>> [m.tolist() for m in global_magnitude_masks([a, b], 0.5)]
    [[False, True], [True, False]]
    """
    if not weights:
        return []
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights])
    removed = _removal_count(sparsity, flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    if removed:
        # A stable ascending sort breaks ties by position: deterministic, exact count.
        order = torch.argsort(flat, stable=True)
        keep[order[:removed]] = False
    sizes = [w.numel() for w in weights]
    return [part.view(w.shape) for part, w in zip(torch.split(keep, sizes), weights, strict=True)]


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP scores (Lee et al., ICLR 2021) of one layer's weights, same shape as ``weight``.

    With the layer's weights sorted by ascending magnitude, weight u scores
    w_u^2 / sum_{v >= u} w_v^2: its share of the squared magnitude still present at and above
    it. The largest weight of every layer scores 1, so one global threshold on these scores
    never empties a layer and sets each layer's level from its own magnitude distribution,
    where a raw global threshold strips the layers with small weights. Zero (already pruned)
    weights score 0.

    >>> [round(x, 4) for x in lamp_scores(torch.tensor([2.0, -1.0, 0.0])).tolist()]
    [1.0, 0.2, 0.0]
    """
    squared = weight.detach().float().flatten().square()
    order = torch.argsort(squared, stable=True)
    ascending = squared[order]
    # Suffix sums: each weight's own square plus all larger ones.
    at_and_above = ascending.flip(0).cumsum(0).flip(0)
    scores = torch.where(at_and_above > 0, ascending / at_and_above, torch.zeros_like(ascending))
    return torch.empty_like(scores).scatter_(0, order, scores).view(weight.shape)


def lamp_masks(weights: Sequence[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """LAMP pruning: remove the ``round(sparsity * total)`` weights with the lowest LAMP score
    across all ``weights`` (one global threshold on per-layer normalised scores).

    weights: tensors of any shapes -> bool masks of the same shapes, in the same order.

    >>> a, b = torch.tensor([1.0, 2.0]), torch.tensor([0.1, 0.2])
    >>> [m.tolist() for m in lamp_masks([a, b], 0.5)]
    [[False, True], [False, True]]
    """
    return global_magnitude_masks([lamp_scores(w) for w in weights], sparsity)


def _grouped(weight: torch.Tensor, m: int) -> torch.Tensor:
    """View ``weight`` [K, C, ...] as groups of ``m`` consecutive input channels: [K, ..., C/m, m].

    The reduction dimension C is moved last so that each group holds m input channels at one
    (k, r, s), the layout 2:4 sparse tensor cores compress.
    """
    if weight.dim() < 2:
        raise SparsityError(
            f"N:M needs a weight with an input-channel dim, got shape {tuple(weight.shape)}"
        )
    channels = weight.shape[1]
    if channels % m:
        raise SparsityError(
            f"weight of shape {tuple(weight.shape)} has C={channels} input channels, not a "
            f"multiple of M={m}: skip this layer or choose an M that divides C"
        )
    moved = weight.movedim(1, -1)
    return moved.reshape(*moved.shape[:-1], channels // m, m)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest magnitudes in every group of ``m`` consecutive input channels.

    weight: conv [K, C, R, S] or linear [K, C], C a multiple of m -> bool mask, same shape.
    Ties keep the lower channel index.

    >>> nm_mask(torch.tensor([[0.1, -0.9, 0.5, 0.2, 1.0, 1.0, 1.0, 0.0]]), 2, 4).int().tolist()
    [[0, 1, 1, 0, 1, 1, 0, 0]]
    """
    check_nm(n, m)
    groups = _grouped(weight.detach().abs(), m)
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order[..., :n], True)
    moved_shape = (*weight.shape[:1], *weight.shape[2:], weight.shape[1])
    return keep.reshape(moved_shape).movedim(-1, 1).contiguous()


def nm_compliant(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive input channels has at most ``n`` nonzeros.

    >>> nm_compliant(torch.tensor([[1.0, 0.0, 2.0, 0.0]]), 2, 4)
    True
    """
    return bool((nm_group_nonzeros(weight, m) <= n).all())


def nm_group_nonzeros(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Nonzero count of every N:M group: [K, ..., C/m] int64."""
    return (_grouped(weight.detach(), m) != 0).sum(-1)


def kept_magnitude(weight: torch.Tensor, mask: torch.Tensor) -> float:
    """Sum of |w| over the kept weights (the quantity N:M permutation search raises)."""
    return float(weight.detach().abs().masked_fill(~mask, 0).sum())
