"""Pareto fronts of accuracy (higher is better) against energy (lower is better)."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, ordered by rising energy.

    ``points`` are (energy, accuracy) pairs. A point is dominated when another has lower or
    equal energy and higher or equal accuracy, and is strictly better in one of them. Exact
    duplicates are all kept.

    >>> pareto_front([(1.0, 80.0), (2.0, 90.0), (2.0, 85.0), (3.0, 90.0), (0.5, 70.0)])
    [4, 0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_accuracy = float("-inf")
    best_energy = float("nan")
    for index in order:
        energy, accuracy = points[index]
        if accuracy > best_accuracy:
            front.append(index)
            best_accuracy, best_energy = accuracy, energy
        elif accuracy == best_accuracy and energy == best_energy:
            front.append(index)
    return front


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when (energy, accuracy) point ``a`` has lower energy and at least ``b``'s
    accuracy (the search's acceptance test: strictly cheaper, no less accurate).

    >>> dominates((1.0, 90.0), (2.0, 90.0)), dominates((1.0, 89.9), (2.0, 90.0))
    (True, False)
    """
    return a[0] < b[0] and a[1] >= b[1]
