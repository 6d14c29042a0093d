"""The search's prediction figures: mean absolute error and Spearman rank correlation of
predicted against verified validation top-1, checked against hand computations and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from codesign.study.search.agreement import average_ranks, prediction_agreement, rank_correlation


def test_four_configurations_by_hand() -> None:
    predicted = [90.0, 91.0, 92.0, 93.0]
    verified = [90.5, 90.8, 92.6, 92.2]
    figures = prediction_agreement(predicted, verified)
    # |errors| = 0.5, 0.2, 0.6, 0.8; ranks 1 2 3 4 against 1 2 4 3: sum d^2 = 2, n = 4,
    # rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8.
    assert figures == {
        "configurations": 4,
        "mean_abs_error_points": pytest.approx(0.525),
        "rank_correlation": pytest.approx(0.8),
    }


def test_ties_share_their_mean_rank() -> None:
    assert average_ranks([90.0, 90.0, 91.0]).tolist() == [1.5, 1.5, 3.0]
    # Pearson of ranks (1, 2, 3) and (1.5, 1.5, 3): centred (-1, 0, 1) and (-.5, -.5, 1),
    # 1.5 / sqrt(2 * 1.5).
    assert rank_correlation([1.0, 2.0, 3.0], [90.0, 90.0, 91.0]) == pytest.approx(
        1.5 / np.sqrt(3.0)
    )


def test_reversed_order_and_undefined_cases() -> None:
    assert rank_correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert rank_correlation([1.0], [2.0]) is None
    assert rank_correlation([1.0, 2.0], [5.0, 5.0]) is None  # a constant side
    empty = prediction_agreement([], [])
    assert empty["mean_abs_error_points"] is None and empty["rank_correlation"] is None
    with pytest.raises(ValueError):
        prediction_agreement([1.0], [1.0, 2.0])


def test_matches_scipy_on_random_values_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 5, size=7).astype(float)
        b = rng.integers(0, 5, size=7).astype(float)
        expected = spearmanr(a, b).statistic
        got = rank_correlation(a, b)
        if np.isnan(expected):
            assert got is None
        else:
            assert got == pytest.approx(expected)
