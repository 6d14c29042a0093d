"""Dominance claims with the paired test of their accuracy side.

Every "A dominates B" the report or the search states (a point off its datapath's Pareto
front, a verified search configuration against a recipe variant) is a :class:`Claim`: the
two variants, the datapath, the top-1 difference and the test of that difference on the same
test images. Energy is deterministic simulation output; accuracy is measured on a finite test
split, so only the accuracy side of a claim can be a sampling accident:

- one seed: the exact McNemar test on the images where the two disagree
  (:func:`codesign.stats.mcnemar_exact`);
- several seeds: the exact sign-flip test on the per-image seed means
  (:func:`codesign.stats.seed_mean_comparison`; McNemar's test for one seed).

``significant``: p < 0.05 (two-sided), the accuracy difference behind the claim. A claim that
holds but is not significant says that the winner is no worse as far as these test images can
tell: where it is also cheaper, that is "cheaper at an accuracy the test split cannot tell
apart", not "more accurate". (:func:`codesign.stats.dominance_verdict` answers another
question, whether the claim as a whole is backed, and counts a strictly cheaper winner that is
not worse as backed whatever the p-value; the reports give the test of the accuracy side, the
only part a sampling accident can produce.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from codesign.io import check_json_keys
from codesign.report.seeds import at_seeds
from codesign.stats import seed_mean_comparison

if TYPE_CHECKING:
    from codesign.pipeline.results import VariantResult

SIGNIFICANCE_LEVEL = 0.05  # two-sided


def format_p(p_value: float) -> str:
    """``p = 0.031`` (two significant digits), ``p < 0.0001`` below that.

    >>> format_p(0.0312), format_p(0.41), format_p(1.0), format_p(3e-9)
    ('p = 0.031', 'p = 0.41', 'p = 1', 'p < 0.0001')
    """
    return "p < 0.0001" if p_value < 1e-4 else f"p = {p_value:.2g}"


@dataclasses.dataclass(frozen=True)
class Claim:
    """ "``winner`` dominates ``loser`` on ``datapath``" and the paired test of its accuracy
    side: ``difference_points`` (top-1 of the winner minus the loser's, seed means, points),
    ``seeds`` (how many seeds the figures average), ``b`` / ``c`` (test images only the winner
    / only the loser gets right, summed over seeds as in
    :func:`~codesign.stats.seed_mean_comparison`) and ``p_value`` (None when the two were not
    scored on the same test images: no paired test exists)."""

    winner: str
    loser: str
    datapath: str
    difference_points: float
    seeds: int
    b: int | None
    c: int | None
    p_value: float | None

    @property
    def significant(self) -> bool | None:
        """p < 0.05; None without a paired test."""
        return None if self.p_value is None else self.p_value < SIGNIFICANCE_LEVEL

    def verdict(self) -> str:
        """``dominates <loser> (p = 0.031, significant)``, as the reports print it."""
        return f"dominates {self.loser} ({self.test_text()})"

    def test_text(self) -> str:
        """``p = 0.031, significant`` / ``p = 0.41, not significant`` / no test."""
        if self.p_value is None:
            return "no paired test: not scored on the same test images"
        return f"{format_p(self.p_value)}, {'' if self.significant else 'not '}significant"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "significant": self.significant}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Claim:
        fields = tuple(f.name for f in dataclasses.fields(cls))
        check_json_keys(data, (*fields, "significant"), "dominance claim")
        return cls(**{k: data[k] for k in fields})


def _matrix(results: Sequence[VariantResult]) -> np.ndarray | None:
    """[seeds, images] correctness of one variant's builds, or None where a build has none."""
    if any(r.test_correct is None for r in results):
        return None
    return np.stack([r.test_correct.vector() for r in results])  # type: ignore[union-attr]


def judge_claim(
    winner: str,
    loser: str,
    runs: Mapping[str, Mapping[int, VariantResult]],
    seeds: Sequence[int],
    datapath: str,
) -> Claim:
    """The :class:`Claim` that ``winner`` dominates ``loser`` (both in ``runs``: name -> seed
    -> build), tested on their builds at ``seeds`` (a seed-independent variant's one build
    stands for every seed)."""
    first, second = at_seeds(winner, runs[winner], seeds), at_seeds(loser, runs[loser], seeds)
    difference = float(np.mean([a.top1 - b.top1 for a, b in zip(first, second, strict=True)]))
    paired = all(
        a.test_correct is not None
        and b.test_correct is not None
        and a.test_correct.pairs_with(b.test_correct)
        for a, b in zip(first, second, strict=True)
    )
    matrices = (_matrix(first), _matrix(second)) if paired else (None, None)
    if matrices[0] is None or matrices[1] is None:
        return Claim(winner, loser, datapath, difference, len(seeds), None, None, None)
    comparison = seed_mean_comparison(*matrices)
    return Claim(
        winner,
        loser,
        datapath,
        comparison.difference_points,
        len(seeds),
        comparison.b,
        comparison.c,
        comparison.p_value,
    )
