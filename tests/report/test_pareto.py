"""Pareto fronts and dominance on known points."""

from __future__ import annotations

import random

from codesign.report import dominates, pareto_front


def test_front_of_known_points() -> None:
    points = [(5.0, 91.0), (3.0, 90.0), (4.0, 89.0), (2.0, 85.0), (6.0, 91.0), (3.0, 88.0)]
    assert pareto_front(points) == [3, 1, 0]


def test_front_members_are_exactly_the_undominated_points() -> None:
    rng = random.Random(0)
    points = [(rng.uniform(1, 10), rng.uniform(80, 92)) for _ in range(200)]
    front = set(pareto_front(points))

    def dominated(i: int) -> bool:
        e, a = points[i]
        return any((e2 <= e and a2 >= a) and (e2 < e or a2 > a) for e2, a2 in points)

    assert front == {i for i in range(len(points)) if not dominated(i)}


def test_ties_and_empty() -> None:
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 90.0), (1.0, 90.0)]) == [0, 1]
    assert dominates((1.0, 90.0), (1.5, 90.0))
    assert not dominates((1.0, 90.0), (1.0, 89.0))  # not cheaper
    assert not dominates((0.5, 89.0), (1.0, 90.0))  # less accurate
