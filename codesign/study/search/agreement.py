"""How well the search's predictions held: predicted against verified validation top-1 of the
configurations it built, as a mean absolute error (points) and a Spearman rank correlation
(does the prediction order the configurations as the builds do)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values`` (smallest first), ties sharing the mean of their ranks.

    >>> average_ranks([3.0, 1.0, 3.0, 2.0]).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    array = np.asarray(values, dtype=float)
    order = np.argsort(array, kind="stable")
    ranks = np.empty(len(array))
    ranks[order] = np.arange(1, len(array) + 1)
    # Tied values share the mean of the ranks they span.
    _, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the average ranks of ``a`` and ``b``; None
    when fewer than two pairs or either side is constant (it is undefined)."""
    if len(a) != len(b):
        raise ValueError(f"rank_correlation: {len(a)} values against {len(b)}")
    if len(a) < 2:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    da, db = ra - ra.mean(), rb - rb.mean()
    norm = float(np.sqrt((da * da).sum() * (db * db).sum()))
    return None if norm == 0.0 else float((da * db).sum() / norm)


def prediction_agreement(predicted: Sequence[float], verified: Sequence[float]) -> dict[str, Any]:
    """``results.json["search"]["prediction"]``: over the verified configurations, the mean
    absolute error of the predicted validation top-1 (points; None without any) and the
    Spearman rank correlation of predicted against verified (None where undefined)."""
    if len(predicted) != len(verified):
        raise ValueError(f"prediction_agreement: {len(predicted)} predictions, {len(verified)}")
    errors = np.abs(np.asarray(predicted, dtype=float) - np.asarray(verified, dtype=float))
    return {
        "configurations": len(predicted),
        "mean_abs_error_points": float(errors.mean()) if len(errors) else None,
        "rank_correlation": rank_correlation(predicted, verified),
    }
