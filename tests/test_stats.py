"""codesign.stats: known answers, each computed another way inside the test."""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pytest
import torch

from codesign import stats
from codesign.errors import CodesignError
from codesign.stats import (
    dominance_verdict,
    mcnemar_exact,
    paired_bootstrap_ci,
    paired_comparison,
    seed_mean_comparison,
    wilson_interval,
)

Z95 = NormalDist().inv_cdf(0.975)  # 1.959964


def wilson_by_quadratic(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson interval as its definition: the p with |k - n·p| <= z·sqrt(n·p·(1 - p)), i.e.
    the roots of (n + z²)·p² - (2k + z²)·p + k²/n = 0, in percent."""
    roots = np.roots([n + z * z, -(2 * k + z * z), k * k / n])
    return 100 * float(min(roots.real)), 100 * float(max(roots.real))


# --- Wilson ------------------------------------------------------------------------------------


def test_wilson_textbook_and_fp32_values() -> None:
    # Newcombe 1998, Stat. Med. 17:857, Table I, 81/263, score method: 0.2553 to 0.3662.
    # By hand: z² = 3.841459; centre = (81 + 1.920729) / (263 + 3.841459) = 0.310749;
    # half = 1.959964 · sqrt(81 · 182 / 263 + 0.960365) / 266.841459 = 0.055460.
    lower, upper = wilson_interval(81, 263)
    assert (lower, upper) == pytest.approx((25.5289, 36.6210), abs=1e-4)
    assert (round(lower, 2), round(upper, 2)) == (25.53, 36.62)
    # The shared ResNet-20 in FP32: 932/1017 = 91.64 %; centre = 933.920729 / 1020.841459
    # = 0.914854, half = 1.959964 · sqrt(932 · 85 / 1017 + 0.960365) / 1020.841459 = 0.017049.
    lower, upper = wilson_interval(932, 1017)
    assert (lower, upper) == pytest.approx((89.7805, 93.1903), abs=1e-4)
    assert lower < 100 * 932 / 1017 < upper


@pytest.mark.parametrize("k, n", [(81, 263), (932, 1017), (1, 10), (999, 1000), (3, 7)])
def test_wilson_equals_the_roots_of_its_defining_quadratic(k: int, n: int) -> None:
    assert wilson_interval(k, n) == pytest.approx(wilson_by_quadratic(k, n), abs=1e-9)


@pytest.mark.parametrize("n", [1, 2, 17, 1017])
def test_wilson_is_symmetric_under_swapping_right_and_wrong(n: int) -> None:
    for k in range(n + 1):
        lower, upper = wilson_interval(k, n)
        mirror_lower, mirror_upper = wilson_interval(n - k, n)
        assert (lower, upper) == pytest.approx((100 - mirror_upper, 100 - mirror_lower), abs=1e-9)
        assert 0.0 <= lower <= 100 * k / n <= upper <= 100.0


def test_wilson_edges_are_exact_and_not_empty() -> None:
    z2 = Z95 * Z95
    assert wilson_interval(0, 20) == pytest.approx((0.0, 100 * z2 / (20 + z2)), abs=1e-12)
    assert wilson_interval(0, 20)[0] == 0.0
    assert wilson_interval(20, 20) == pytest.approx((100 * 20 / (20 + z2), 100.0), abs=1e-12)
    assert wilson_interval(20, 20)[1] == 100.0


def test_wilson_widens_with_confidence() -> None:
    narrow, wide = wilson_interval(932, 1017, 0.90), wilson_interval(932, 1017, 0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


@pytest.mark.parametrize("p", [0.5, 0.9, 0.98])
def test_wilson_covers_the_true_rate_about_95_percent_of_the_time(p: float) -> None:
    n = 1000
    rng = np.random.default_rng(1927)
    draws = rng.binomial(n, p, size=4000)
    intervals = {int(k): wilson_interval(int(k), n) for k in np.unique(draws)}
    covered = [intervals[int(k)][0] <= 100 * p <= intervals[int(k)][1] for k in draws]
    assert 0.93 <= float(np.mean(covered)) <= 0.97
    # The same coverage exactly: the binomial mass of every k whose interval holds p.
    log_pmf = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(p) + (n - k) * math.log1p(-p)
        for k in range(n + 1)
    ]  # fmt: skip
    exact = sum(
        math.exp(log_pmf[k])
        for k in range(n + 1)
        if wilson_interval(k, n)[0] <= 100 * p <= wilson_interval(k, n)[1]
    )
    assert 0.94 <= exact <= 0.96


@pytest.mark.parametrize(
    "correct, total, confidence, message",
    [
        (0, 0, 0.95, "total >= 1"),
        (11, 10, 0.95, "exceeds total"),
        (-1, 10, 0.95, ">= 0"),
        (2.5, 10, 0.95, "integer"),
        (True, 10, 0.95, "integer"),
        (5, 10, 1.0, "confidence"),
        (5, 10, 0.0, "confidence"),
    ],
)
def test_wilson_refuses_bad_input(correct, total, confidence, message) -> None:
    with pytest.raises(CodesignError, match=message) as info:
        wilson_interval(correct, total, confidence)
    assert isinstance(info.value, ValueError)


def test_wilson_accepts_numpy_and_torch_integers() -> None:
    expected = wilson_interval(932, 1017)
    assert wilson_interval(np.int64(932), np.int32(1017)) == expected
    assert wilson_interval(torch.tensor(932), 1017) == expected


# --- McNemar -----------------------------------------------------------------------------------


def doubled_tail(b: int, c: int) -> Fraction:
    """2 · P[X <= min(b, c)], X ~ Binomial(b + c, 1/2), as an exact fraction (not capped at 1)."""
    n = b + c
    return Fraction(2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)), 2**n)


def log_space_p(b: int, c: int) -> float:
    """The same p-value from log-gamma terms and a log-sum-exp (no big integers)."""
    n, m = b + c, min(b, c)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(m + 1)]
    top = max(terms)
    log_tail = top + math.log(sum(math.exp(t - top) for t in terms)) - n * math.log(2)
    return min(1.0, 2 * math.exp(log_tail))


@pytest.mark.parametrize("b", [0, 1, 5, 50, 1500])
def test_mcnemar_equal_discordant_counts_give_one(b: int) -> None:
    # For b = c > 0 the doubled tail includes the central term twice, so it exceeds 1 and the
    # min(1, ·) caps it; b = c = 0 has no discordant image (p = 1 by definition).
    if b > 0:
        assert doubled_tail(b, b) > 1
    assert mcnemar_exact(b, b) == 1.0


def test_mcnemar_one_sided_table() -> None:
    # All 10 discordant images favour one model: p = 2 · (1/2)^10.
    assert mcnemar_exact(0, 10) == 2 / 2**10
    assert mcnemar_exact(10, 0) == 2 / 2**10


def test_mcnemar_textbook_table() -> None:
    # The worked example of Fagerland, Lydersen & Laake 2013, BMC Med. Res. Methodol. 13:91
    # (airway hyper-responsiveness before/after stem cell transplantation): b = 1, c = 7;
    # exact conditional p = 2 · (C(8, 0) + C(8, 1)) / 2^8 = 18 / 256 = 0.0703.
    expected = 2 * (math.comb(8, 0) + math.comb(8, 1)) / 2**8
    assert mcnemar_exact(1, 7) == expected == 18 / 256
    assert round(mcnemar_exact(7, 1), 3) == 0.070


def test_mcnemar_matches_exact_fractions_on_every_small_table() -> None:
    for b in range(31):
        for c in range(31):
            expected = min(Fraction(1), doubled_tail(b, c))
            assert mcnemar_exact(b, c) == pytest.approx(float(expected), rel=1e-15)


@pytest.mark.parametrize("b, c", [(1400, 1600), (1000, 2000), (1450, 1550), (1600, 1400)])
def test_mcnemar_large_tables_stay_finite_and_match_log_space(b: int, c: int) -> None:
    p = mcnemar_exact(b, c)  # 2.8e-4, 1.0e-75, 0.0707, 2.8e-4
    assert math.isfinite(p) and 0.0 < p <= 1.0
    assert p == pytest.approx(log_space_p(b, c), rel=1e-9)


def test_mcnemar_below_the_smallest_float_rounds_to_zero() -> None:
    # 2 · 3000 / 2^3000 ~ 1e-899: far below the smallest positive double (~4.9e-324).
    assert math.log(2 * 3000) - 3000 * math.log(2) < math.log(5e-324)
    assert mcnemar_exact(2999, 1) == 0.0


def test_mcnemar_refuses_negative_counts() -> None:
    with pytest.raises(CodesignError, match=">= 0"):
        mcnemar_exact(-1, 3)


# --- paired comparison -------------------------------------------------------------------------


def constructed_pair(
    only_first: int, only_second: int, both: int, neither: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two correctness vectors with the given cell counts, images in a seeded random order."""
    first = [True] * only_first + [False] * only_second + [True] * both + [False] * neither
    second = [False] * only_first + [True] * only_second + [True] * both + [False] * neither
    order = np.random.default_rng(seed).permutation(len(first))
    return np.array(first)[order], np.array(second)[order]


def test_paired_comparison_on_a_constructed_pair() -> None:
    first, second = constructed_pair(12, 5, 70, 13)
    result = paired_comparison(first, second)
    assert (result.b, result.c, result.total) == (12, 5, 100)
    top1_first, top1_second = 100 * first.mean(), 100 * second.mean()  # 82 % and 75 %
    assert result.difference_points == pytest.approx(top1_first - top1_second) == 7.0
    assert result.p_value == float(min(Fraction(1), doubled_tail(12, 5)))
    assert not result.significant()  # p = 0.1435
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.b = 0  # type: ignore[misc]


def test_paired_comparison_takes_torch_numpy_and_lists_alike() -> None:
    first, second = constructed_pair(30, 8, 50, 12)
    expected = paired_comparison(first, second)
    assert paired_comparison(torch.from_numpy(first), torch.from_numpy(second)) == expected
    assert paired_comparison(first.tolist(), second.tolist()) == expected
    assert paired_comparison(first.astype(np.int64), second.astype(np.uint8)) == expected
    assert expected.significant(0.05) and not expected.significant(1e-4)


@pytest.mark.parametrize(
    "first, second, message",
    [
        ([True, False, True], [True, False], "same test images: 3 vs 2"),
        ([[True, False]], [[True, False]], "1-D"),
        ([], [], "non-empty"),
        ([0, 2, 1], [0, 1, 1], "booleans"),
    ],
)
def test_paired_comparison_refuses_bad_vectors(first, second, message) -> None:
    with pytest.raises(CodesignError, match=message):
        paired_comparison(first, second)


def test_significant_refuses_a_bad_alpha() -> None:
    with pytest.raises(CodesignError, match="alpha"):
        paired_comparison([True], [False]).significant(1.5)


# --- paired bootstrap --------------------------------------------------------------------------


def test_bootstrap_contains_the_difference_and_matches_count_resampling() -> None:
    first, second = constructed_pair(60, 40, 850, 50)  # 1,000 images, +2 points
    lower, upper = paired_bootstrap_ci(first, second)
    assert lower < 2.0 < upper
    # Resampling pairs is resampling the three cells (only first, only second, tie) as one
    # multinomial draw: the same bootstrap distribution, computed from counts alone.
    counts = np.random.default_rng(1993).multinomial(1000, [0.06, 0.04, 0.90], size=200_000)
    reference = np.quantile(100 * (counts[:, 0] - counts[:, 1]) / 1000, [0.025, 0.975])
    assert (lower, upper) == pytest.approx(tuple(reference), abs=0.2)
    # and the normal approximation: sd of the per-image difference / sqrt(n), in points.
    half = Z95 * 100 * math.sqrt((0.10 - 0.02**2) / 1000)
    assert (lower, upper) == pytest.approx((2.0 - half, 2.0 + half), abs=0.25)


def test_bootstrap_shrinks_as_the_split_grows() -> None:
    first, second = constructed_pair(6, 4, 85, 5)
    small = paired_bootstrap_ci(first, second)
    large = paired_bootstrap_ci(np.tile(first, 16), np.tile(second, 16))
    # Same proportions, 16 times the images: about a quarter of the width.
    assert large[0] < 2.0 < large[1]
    assert (large[1] - large[0]) < 0.35 * (small[1] - small[0])


def test_bootstrap_is_deterministic_with_a_seed_and_independent_of_chunking(monkeypatch) -> None:
    first, second = constructed_pair(25, 15, 150, 10)
    once = paired_bootstrap_ci(first, second, resamples=3000, seed=7)
    assert paired_bootstrap_ci(first, second, resamples=3000, seed=7) == once
    other = paired_bootstrap_ci(first, second, resamples=3000, seed=8)
    assert other == pytest.approx(once, abs=1.0)  # another draw of the same distribution
    monkeypatch.setattr(stats, "_BOOTSTRAP_CHUNK_ELEMENTS", 1000)  # 5 resamples per chunk
    assert paired_bootstrap_ci(first, second, resamples=3000, seed=7) == once
    as_tensors = paired_bootstrap_ci(
        torch.from_numpy(first), torch.from_numpy(second), resamples=3000, seed=7
    )
    assert as_tensors == once


def test_bootstrap_refuses_bad_settings() -> None:
    first, second = constructed_pair(2, 1, 5, 2)
    with pytest.raises(CodesignError, match="resamples"):
        paired_bootstrap_ci(first, second, resamples=0)
    with pytest.raises(CodesignError, match="confidence"):
        paired_bootstrap_ci(first, second, confidence=95)
    with pytest.raises(CodesignError, match="same test images"):
        paired_bootstrap_ci(first, second[:-1])


# --- dominance ---------------------------------------------------------------------------------


def test_strict_dominance_that_is_significant() -> None:
    a, b = constructed_pair(30, 5, 900, 65)  # A: 93.0 %, B: 90.5 %, McNemar p ~ 1e-5
    cheaper = dominance_verdict(1.0, a, 2.0, b)
    assert cheaper.dominates and cheaper.significant
    assert cheaper.comparison == paired_comparison(a, b)
    assert cheaper.comparison.p_value < 0.05
    same_energy = dominance_verdict(2.0, a, 2.0, b)  # rests on accuracy alone, and holds
    assert same_energy.dominates and same_energy.significant


def test_dominance_on_a_one_image_margin() -> None:
    a, b = constructed_pair(1, 0, 900, 99)  # one image apart: p = 1
    same_energy = dominance_verdict(3.0, a, 3.0, b)
    assert same_energy.dominates and not same_energy.significant
    assert same_energy.comparison.p_value == 1.0
    # Strictly cheaper: the strict part is energy (deterministic), and A is not worse.
    cheaper = dominance_verdict(2.0, a, 3.0, b)
    assert cheaper.dominates and cheaper.significant


def test_no_dominance_is_never_significant() -> None:
    a, b = constructed_pair(5, 40, 900, 55)  # A is significantly less accurate
    assert not dominance_verdict(1.0, a, 2.0, b).dominates  # cheaper but worse
    assert not dominance_verdict(3.0, b, 2.0, a).dominates  # better but dearer
    verdict = dominance_verdict(2.0, a, 2.0, a)  # identical: nothing strict
    assert not verdict.dominates and not verdict.significant
    verdict = dominance_verdict(1.0, a, 2.0, b)
    assert verdict.comparison.significant() and not verdict.significant


def test_dominance_refuses_bad_input() -> None:
    a, b = constructed_pair(5, 4, 10, 1)
    with pytest.raises(CodesignError, match="energy_a must be finite"):
        dominance_verdict(float("nan"), a, 1.0, b)
    with pytest.raises(CodesignError, match="same test images"):
        dominance_verdict(1.0, a, 2.0, b[:-1])
    with pytest.raises(CodesignError, match="alpha"):
        dominance_verdict(1.0, a, 2.0, b, alpha=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dominance_verdict(1.0, a, 2.0, b).dominates = False  # type: ignore[misc]


# --- seed means --------------------------------------------------------------------------------


def sign_flip_by_enumeration(first: np.ndarray, second: np.ndarray) -> float:
    """The sign-flip p-value by listing all 2^n sign patterns of the per-image differences."""
    d = first.sum(axis=0).astype(int) - second.sum(axis=0).astype(int)
    signs = np.array(list(itertools.product([1, -1], repeat=d.size)))
    return float(np.mean(np.abs(signs @ d) >= abs(d.sum())))


@pytest.mark.parametrize("seeds, seed", [(2, 0), (2, 1), (3, 2), (4, 3)])
def test_seed_mean_test_equals_the_enumerated_sign_flip_test(seeds: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    first = rng.random((seeds, 14)) < 0.8
    second = rng.random((seeds, 14)) < 0.6
    result = seed_mean_comparison(first, second)
    assert result.p_value == pytest.approx(sign_flip_by_enumeration(first, second), abs=1e-12)
    assert result.total == seeds * 14
    top1_first, top1_second = 100 * first.mean(axis=1), 100 * second.mean(axis=1)
    assert result.difference_points == pytest.approx(np.mean(top1_first - top1_second))


def test_one_seed_or_repeated_seeds_is_mcnemar() -> None:
    first, second = constructed_pair(12, 5, 70, 13)
    once = seed_mean_comparison(first, second)  # a vector is one seed
    assert once == paired_comparison(first, second)
    # A seed-independent pair repeated at three seeds: every difference is 3 or -3, the same
    # sign-flip distribution scaled by 3, so the same p as McNemar on the one seed.
    thrice = seed_mean_comparison(np.tile(first, (3, 1)), np.tile(second, (3, 1)))
    assert (thrice.b, thrice.c, thrice.total) == (36, 15, 300)
    assert thrice.p_value == pytest.approx(mcnemar_exact(12, 5), rel=1e-12)
    assert thrice.difference_points == pytest.approx(once.difference_points)


def test_seed_mean_test_edges_and_refusals() -> None:
    same = np.array([[True, False, True], [False, False, True]])
    assert seed_mean_comparison(same, same).p_value == 1.0
    # Balanced disagreements: +1 on one image, -1 on another: nothing to tell, p = 1.
    balanced = seed_mean_comparison([[1, 0], [1, 1]], [[0, 1], [1, 1]])
    assert (balanced.b, balanced.c, balanced.p_value) == (1, 1, 1.0)
    with pytest.raises(CodesignError, match="same seeds and test images"):
        seed_mean_comparison(np.ones((2, 3), bool), np.ones((3, 3), bool))
    with pytest.raises(CodesignError, match="booleans"):
        seed_mean_comparison([[0, 2]], [[0, 1]])


def test_top1_ci95_is_the_wilson_interval_of_the_counts() -> None:
    from codesign.stats import top1_ci95

    # 932 of 1017 images: the shared ResNet-20's FP32 top-1.
    assert top1_ci95(100.0 * 932 / 1017, 1017) == list(wilson_interval(932, 1017))
