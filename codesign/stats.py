"""Sampling uncertainty of top-1 on a finite test split, and of claims built on it.

A top-1 figure is a binomial proportion measured on a fixed set of images: on ~1,000 images one
image is 0.1 points, and a 95 % interval is several points wide. Two variants scored on the same
images are paired, so their difference is judged from the images on which they disagree
(McNemar), not from two independent intervals. Energy is deterministic simulation output and
carries no sampling noise; only the accuracy side of a dominance claim is tested here.

Units: intervals of one top-1 are in percent, differences of two top-1 are in points (percent
minus percent). Standard library (``math``, ``statistics``) and numpy only.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from codesign.errors import ConfigError, DataError

__all__ = [
    "DominanceVerdict",
    "PairedComparison",
    "dominance_verdict",
    "mcnemar_exact",
    "paired_bootstrap_ci",
    "paired_comparison",
    "seed_mean_comparison",
    "top1_ci95",
    "wilson_interval",
]

# Bootstrap indices are drawn in chunks of at most this many (int64: 32 MiB).
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


def _level(value: float, name: str) -> float:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return float(value)


def _count(value: int, name: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{name} must be an integer count, got the bool {value!r}")
    try:
        count = operator.index(value)
    except TypeError:
        raise DataError(f"{name} must be an integer count, got {value!r}") from None
    if count < 0:
        raise DataError(f"{name} must be a count >= 0, got {count}")
    return count


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``correct / total``, in percent (the units of top-1).

    With z the two-sided normal quantile of ``confidence``, the bounds are
    ``(k + z²/2 ± z·sqrt(k(n-k)/n + z²/4)) / (n + z²)`` for k = ``correct``, n = ``total``
    (Wilson 1927, JASA 22:209; Newcombe 1998, Stat. Med. 17:857, method 3). Unlike the normal
    approximation it stays inside [0, 100] and is not empty at k = 0 or k = n, where the bound
    at the edge is exactly 0 or 100.

    >>> [round(x, 2) for x in wilson_interval(81, 263)]
    [25.53, 36.62]
    >>> wilson_interval(0, 10)[0], wilson_interval(10, 10)[1]
    (0.0, 100.0)
    """
    k, n = _count(correct, "correct"), _count(total, "total")
    if n == 0:
        raise DataError("wilson_interval needs total >= 1: a top-1 over no images is undefined")
    if k > n:
        raise DataError(f"correct ({k}) exceeds total ({n})")
    z = NormalDist().inv_cdf(0.5 + _level(confidence, "confidence") / 2)
    z2 = z * z
    centre = (k + z2 / 2) / (n + z2)
    half = z * math.sqrt(k * (n - k) / n + z2 / 4) / (n + z2)
    lower = 0.0 if k == 0 else max(0.0, centre - half)
    upper = 1.0 if k == n else min(1.0, centre + half)
    return 100.0 * lower, 100.0 * upper


def top1_ci95(top1: float, samples: int) -> list[float]:
    """``[low, high]`` (%): the 95 % Wilson interval of a top-1 of ``top1`` % on ``samples``
    images (the form results record beside every top-1)."""
    correct = round(top1 * samples / 100.0)
    return list(wilson_interval(correct, samples, 0.95))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts of a paired comparison.

    ``b``: images the first model gets right and the second wrong; ``c``: the reverse. Under
    the null hypothesis of equal accuracy each discordant image is a fair coin, so with
    X ~ Binomial(b + c, 1/2) the p-value is ``min(1, 2 · P[X <= min(b, c)])`` (McNemar 1947,
    Psychometrika 12:153; exact conditional form as in Fagerland et al. 2013, BMC Med. Res.
    Methodol. 13:91). b + c = 0 gives 1. The tail is summed in exact integers
    (``Σ C(n, i) / 2^n``) and rounded once, so thousands of discordant images stay accurate.

    >>> mcnemar_exact(0, 10) == 2 / 2**10, mcnemar_exact(5, 5), mcnemar_exact(0, 0)
    (True, 1.0, 1.0)
    """
    b, c = _count(b, "b"), _count(c, "c")
    n, m = b + c, min(b, c)  # b == c (and b + c = 0): the doubled tail exceeds 1, p is 1
    term, tail = 1, 1  # C(n, 0); C(n, i + 1) = C(n, i) · (n - i) / (i + 1), exact
    for i in range(m):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, (2 * tail) / (1 << n))  # int / int is correctly rounded in Python


def _correctness(values: Any, name: str) -> np.ndarray:
    """A 1-D boolean numpy copy of a per-image correctness vector (torch tensor or array)."""
    if hasattr(values, "detach"):  # a torch tensor, possibly on an accelerator
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D vector, got shape {array.shape}")
    if array.dtype != np.bool_:
        if not np.isin(array, (0, 1)).all():
            raise DataError(f"{name} must hold booleans (correct or not per image)")
        array = array.astype(np.bool_)
    return array


def _pair(first: Any, second: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _correctness(first, "first_correct"), _correctness(second, "second_correct")
    if a.shape != b.shape:
        raise DataError(
            f"paired vectors must cover the same test images: {a.size} vs {b.size} entries"
        )
    return a, b


@dataclass(frozen=True)
class PairedComparison:
    """Two models scored on the same images: ``b`` images only the first gets right, ``c``
    only the second, out of ``total``; ``difference_points`` = top-1 of the first minus
    top-1 of the second, in points (= 100 · (b - c) / total); ``p_value`` from
    ``mcnemar_exact(b, c)``.

    From :func:`seed_mean_comparison` (k seeds): ``total`` = k · images, ``b`` and ``c`` sum
    the per-image seed-count differences that favour the first and the second model,
    ``difference_points`` is the difference of the seed-mean top-1s, and ``p_value`` is the
    exact sign-flip test (McNemar's for k = 1)."""

    b: int
    c: int
    total: int
    difference_points: float
    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        """True when the McNemar p-value is below ``alpha``."""
        return self.p_value < _level(alpha, "alpha")


def paired_comparison(first_correct: Any, second_correct: Any) -> PairedComparison:
    """Paired comparison of two per-image correctness vectors over the same test images.

    >>> r = paired_comparison([True, True, False, True], [True, False, False, False])
    >>> r.b, r.c, r.difference_points, r.p_value
    (2, 0, 50.0, 0.5)
    """
    first, second = _pair(first_correct, second_correct)
    b = int(np.count_nonzero(first & ~second))
    c = int(np.count_nonzero(~first & second))
    return PairedComparison(b, c, first.size, 100.0 * (b - c) / first.size, mcnemar_exact(b, c))


def paired_bootstrap_ci(
    first_correct: Any,
    second_correct: Any,
    resamples: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of top-1(first) - top-1(second), in points.

    Images are resampled with replacement as pairs (both models keep the same draw), the
    difference is recomputed on each of ``resamples`` draws, and the ``(1 ± confidence) / 2``
    quantiles are returned (Efron & Tibshirani 1993, An Introduction to the Bootstrap, ch. 13).
    Indices are drawn as one ``(rows, n)`` array per chunk from ``numpy.random.default_rng(seed)``,
    so the same inputs and seed give the same interval.

    >>> paired_bootstrap_ci([True] * 8, [True] * 8)
    (0.0, 0.0)
    """
    first, second = _pair(first_correct, second_correct)
    level = _level(confidence, "confidence")
    count = _count(resamples, "resamples")
    if count < 1:
        raise ConfigError("resamples must be >= 1")
    per_image = first.astype(np.int8) - second.astype(np.int8)  # +1, 0 or -1 per image
    n = per_image.size
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    sums = np.empty(count, dtype=np.int64)
    for start in range(0, count, rows):
        stop = min(count, start + rows)
        indices = rng.integers(0, n, size=(stop - start, n))
        sums[start:stop] = per_image[indices].sum(axis=1, dtype=np.int64)
    tail = (1.0 - level) / 2
    lower, upper = np.quantile(100.0 * sums / n, [tail, 1.0 - tail])
    return float(lower), float(upper)


@dataclass(frozen=True)
class DominanceVerdict:
    """Whether A dominates B on (energy, top-1), and whether the accuracy side is backed.
    ``comparison`` is ``paired_comparison(correct_a, correct_b)``; see ``dominance_verdict``."""

    dominates: bool
    significant: bool
    comparison: PairedComparison
    alpha: float


def dominance_verdict(
    energy_a: float, correct_a: Any, energy_b: float, correct_b: Any, alpha: float = 0.05
) -> DominanceVerdict:
    """Judge the claim "A dominates B" on energy (lower is better) and top-1 (higher).

    ``dominates``: ``energy_a <= energy_b`` and ``top1_a >= top1_b`` with at least one strict,
    top-1 taken on the same images (``correct_a``, ``correct_b``); energies in any one unit.

    ``significant``: the claim holds and its accuracy side is backed at level ``alpha``.
    Energy is deterministic, so only accuracy can be a sampling accident:

    - equal energies: the claim rests on A being more accurate, which must be significant
      (exact McNemar p < ``alpha``);
    - ``energy_a < energy_b``: the strict part is the energy, and the accuracy side only needs
      A not to be significantly worse. A dominating A is never observed worse, so this holds;
      a non-significant accuracy gain then means "cheaper at the same accuracy", not "better".

    A claim that does not hold (``dominates`` False) is never significant.

    >>> v = dominance_verdict(1.0, [True] * 40, 1.0, [True] * 39 + [False])
    >>> v.dominates, v.significant, v.comparison.p_value
    (True, False, 1.0)
    """
    for name, value in (("energy_a", energy_a), ("energy_b", energy_b)):
        if not math.isfinite(value):
            raise DataError(f"{name} must be finite, got {value!r}")
    comparison = paired_comparison(correct_a, correct_b)
    level = _level(alpha, "alpha")
    # top1_a - top1_b has the sign of b - c (same images): compare counts, not rounded floats.
    accuracy_gain = comparison.b - comparison.c
    dominates = (
        energy_a <= energy_b and accuracy_gain >= 0 and (energy_a < energy_b or accuracy_gain > 0)
    )
    significant = dominates and (energy_a < energy_b or comparison.significant(level))
    return DominanceVerdict(dominates, significant, comparison, level)


def _seed_rows(values: Any, name: str) -> np.ndarray:
    """A 2-D boolean [seeds, images] numpy copy (a 1-D vector is one seed)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.size == 0:
        raise DataError(f"{name} must be a non-empty [seeds, images] matrix, got {array.shape}")
    return np.stack([_correctness(row, name) for row in array])


def _binomial_half_pmf(m: int) -> np.ndarray:
    """P[X = x] for X ~ Binomial(m, 1/2), x = 0..m, from log C(m, x) as a running sum
    (no overflow for any m; the tails underflow to 0 only below 1e-308)."""
    x = np.arange(1, m + 1, dtype=np.float64)
    log_choose = np.concatenate(([0.0], np.cumsum(np.log(m - x + 1) - np.log(x))))
    return np.exp(log_choose - m * math.log(2.0))


def seed_mean_comparison(first_correct: Any, second_correct: Any) -> PairedComparison:
    """Paired comparison of two models built at the same k seeds and scored on the same images.

    ``first_correct``, ``second_correct``: [k, images] correctness, one row per seed (same
    seed order on both sides; a seed-independent model repeats its one row). Per image,
    ``d = Σ_seeds (first - second)`` is k times the difference of its seed-mean correctness.
    With no difference between the models, either model is as likely to be the one ahead on
    an image, so the exact paired randomization (sign-flip) test applies: p = P[|Σ ε·d| >=
    |Σ d|] over independent fair signs ε (Fisher 1935, The Design of Experiments, §21). Images
    with d = 0 carry no information, as McNemar's concordant pairs; for k = 1 the test *is*
    the exact McNemar test, computed by :func:`mcnemar_exact`. For k > 1 the null
    distribution is the convolution of one Binomial(m_j, 1/2) per magnitude j = 1..k (m_j
    images with |d| = j), in float64.

    >>> r = seed_mean_comparison([[1, 1, 0, 1], [1, 1, 1, 1]], [[1, 0, 0, 0], [1, 0, 1, 1]])
    >>> r.b, r.c, r.total, r.difference_points, r.p_value
    (3, 0, 8, 37.5, 0.5)
    """
    first, second = (
        _seed_rows(first_correct, "first_correct"),
        _seed_rows(second_correct, "second_correct"),
    )
    if first.shape != second.shape:
        raise DataError(
            f"paired matrices must cover the same seeds and test images: {list(first.shape)} "
            f"vs {list(second.shape)} [seeds, images]"
        )
    seeds, images = first.shape
    if seeds == 1:
        return paired_comparison(first[0], second[0])
    d = first.sum(axis=0, dtype=np.int64) - second.sum(axis=0, dtype=np.int64)
    b, c = int(d[d > 0].sum()), int(-d[d < 0].sum())
    total = seeds * images
    difference = 100.0 * (b - c) / total
    if b == c:  # the observed statistic is 0: every sign pattern is as extreme
        return PairedComparison(b, c, total, difference, 1.0)
    pmf = np.ones(1)  # of S, the summed magnitudes that get a + sign
    for magnitude, count in enumerate(np.bincount(np.abs(d), minlength=seeds + 1)[1:], 1):
        if count:
            spread = np.zeros(magnitude * int(count) + 1)
            spread[::magnitude] = _binomial_half_pmf(int(count))
            pmf = np.convolve(pmf, spread)
    everything = len(pmf) - 1  # = b + c; the statistic Σ ε·d is 2·S - everything
    s = np.arange(len(pmf))
    extreme = np.abs(2 * s - everything) >= abs(b - c)
    return PairedComparison(b, c, total, difference, min(1.0, float(pmf[extreme].sum())))
