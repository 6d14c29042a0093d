"""The searched front: a multiple-choice knapsack over measured per-layer drops and energies,
the constraint's first guess on it, and the order in which the rest of it is verified."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from codesign.errors import ConfigError

DROP_STEP = 0.01  # points of accuracy per DP bin
MAX_DROP = 30.0  # points; assignments predicted to lose more are not considered


class Assignment(NamedTuple):
    """One entry of the front: predicted drop (points), predicted energy of the searchable
    layers (uJ per inference) and the option index chosen for each layer."""

    drop_points: float
    energy_uj_per_inference: float
    picks: list[int]


def solve_front(
    drops: np.ndarray, energies: np.ndarray, step: float = DROP_STEP, max_drop: float = MAX_DROP
) -> list[Assignment]:
    """Multiple-choice knapsack: for every total drop, the cheapest per-layer assignment.

    ``drops`` and ``energies`` are [layers, options] (points, uJ). Returns the Pareto front as
    (predicted drop, predicted energy, option index per layer), by rising drop.

    >>> front = solve_front(np.array([[0.0, 1.0], [0.0, 0.5]]), np.array([[2.0, 1.0], [2.0, 1.5]]))
    >>> [(round(d, 2), e, c) for d, e, c in front]
    [(0.0, 4.0, [0, 0]), (0.5, 3.5, [0, 1]), (1.0, 3.0, [1, 0]), (1.5, 2.5, [1, 1])]
    """
    layers, options = drops.shape
    bins = round(max_drop / step) + 1
    cost = np.rint(np.clip(drops, 0.0, None) / step).astype(np.int64)
    best = np.full(bins, np.inf)
    best[0] = 0.0
    choice = np.zeros((layers, bins), dtype=np.int64)
    for layer in range(layers):  # layers x options array shifts; no loop over data
        candidates = np.full((options, bins), np.inf)
        for option in range(options):
            shift = cost[layer, option]
            if shift < bins:
                candidates[option, shift:] = best[: bins - shift] + energies[layer, option]
        choice[layer] = candidates.argmin(axis=0)
        best = candidates.min(axis=0)
    front = []
    cheapest = np.inf
    for level in range(bins):
        if best[level] < cheapest - 1e-12:
            cheapest = best[level]
            picks, remaining = [], level
            for layer in range(layers - 1, -1, -1):
                option = int(choice[layer, remaining])
                picks.append(option)
                remaining -= int(cost[layer, option])
            front.append(Assignment(level * step, float(best[level]), picks[::-1]))
    return front


def charged_drops(drops: np.ndarray, samples: int) -> np.ndarray:
    """The per-layer drops (points, [layers, options], reference option first) that the choice
    charges: every option but the reference costs at least one sensitivity image, 100 /
    ``samples`` points.

    A drop measured as 0 (or below) on ``samples`` images only says the real drop is under
    about one image. Charging nothing for it made such changes free, so the knapsack took all
    of them at once, while small real drops add up. It matters where nearly every sensitivity
    image is classified right, as on images the checkpoint was trained on.

    >>> charged_drops(np.array([[0.0, -0.1, 0.3]]), samples=1000).tolist()
    [[0.0, 0.1, 0.3]]
    """
    charged = np.maximum(drops, 100.0 / samples)
    charged[:, 0] = 0.0
    return charged


def calibrated_drops(drops: np.ndarray, uniform_top1: Sequence[float]) -> np.ndarray:
    """The charged ``drops`` (points, [layers, options], reference option first) scaled per
    option so that each option's column sums to the drop its uniform model measured: the
    reference's top-1 minus that model's (``uniform_top1``, %, one per option; a gain counts
    as no drop). The swaps give each layer's share of an option's cost, the uniform model
    its total, so the prediction is exact at every corner of the front.

    Single-layer drops on images the checkpoint has seen are mostly confidence (soft
    accuracy) lost, not predictions flipped, and they add up to more than the whole model
    loses once every layer is at the option and trained together.

    >>> calibrated_drops(np.array([[0.0, 1.0], [0.0, 3.0]]), [99.0, 97.0]).tolist()
    [[0.0, 0.5], [0.0, 1.5]]
    """
    measured = np.clip(uniform_top1[0] - np.asarray(uniform_top1, dtype=float), 0.0, None)
    summed = drops.sum(axis=0)
    scale = np.divide(measured, summed, out=np.zeros_like(summed), where=summed > 0)
    return drops * scale


def first_guess(
    front: Sequence[Assignment],
    reference_top1: float,
    fixed_energy: float,
    energy_budget_uj: float | None,
    accuracy_floor: float | None,
) -> int:
    """Index into ``front`` of the predicted answer: the smallest drop within the energy
    budget (uJ per inference, ``fixed_energy`` of the layers outside the search included), or
    the cheapest assignment predicted to keep the accuracy floor (validation top-1, %)."""
    if (energy_budget_uj is None) == (accuracy_floor is None):
        raise ConfigError("give exactly one of --energy-budget-uj and --accuracy-floor")
    if energy_budget_uj is not None:
        feasible = [i for i, (_, e, _) in enumerate(front) if e + fixed_energy <= energy_budget_uj]
        if not feasible:
            cheapest = front[-1][1] + fixed_energy
            raise ConfigError(
                f"no configuration fits {energy_budget_uj} uJ per inference; the cheapest "
                f"predicted is {cheapest:.4g} uJ: raise --energy-budget-uj"
            )
        return feasible[0]
    feasible = [i for i, (d, _, _) in enumerate(front) if reference_top1 - d >= accuracy_floor]
    if not feasible:
        raise ConfigError(
            f"no configuration is predicted to keep {accuracy_floor} % (reference "
            f"{reference_top1:.2f} % on the validation split): lower --accuracy-floor"
        )
    return feasible[-1]


def feasible_span(
    front: Sequence[tuple[float, float, list[int]]], chosen: int, accuracy_floor: float | None
) -> range:
    """Front indices on the constraint's side of the verified ``chosen`` one: under an energy
    budget the cheaper assignments (up to the front's end), under an accuracy floor the
    predicted-safer ones (down to the reference, index 0)."""
    if accuracy_floor is None:
        return range(chosen, len(front))
    return range(chosen, -1, -1)


def spread_along_front(front: Sequence[tuple[float, float, list[int]]], span: range) -> list[int]:
    """Indices of ``span`` in the order to verify them: the far end first, then repeatedly the
    one whose predicted energy (uJ) is farthest from every index already picked, so any number
    of builds covers the span's energy range evenly. ``span[0]`` counts as picked.

    >>> front = [(0.0, e, []) for e in (10.0, 9.0, 8.0, 7.0, 6.0, 5.0)]
    >>> spread_along_front(front, range(1, 6))
    [5, 3, 2, 4]
    """
    if len(span) < 2:
        return []
    energies = np.array([front[i][1] for i in span])
    order: list[int] = []
    distance = np.abs(energies - energies[0])  # to the nearest picked index
    while len(order) < len(span) - 1:
        far = int(distance.argmax())
        if distance[far] <= 0.0:
            break  # the rest repeat a picked energy
        order.append(span[far])
        distance = np.minimum(distance, np.abs(energies - energies[far]))
    return order
