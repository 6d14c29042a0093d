"""Checking the front by building it: the constraint (:class:`Goal`), the builds made so far
(:class:`Builds`), the choice under the constraint, the spread of the builds left over, and
the verdicts against the recipe's uniform variants.

Per-layer drops do not add up exactly (one-shot pruning of many layers hurts more than the
sum), and fine-tuning and QAT change what remains, so every prediction that matters is
checked by building the model, within the ``verify`` builds the recipe allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from codesign.errors import ConfigError
from codesign.pipeline.results import VariantResult
from codesign.recipe import SearchSpec, VariantSpec
from codesign.report.claims import judge_claim
from codesign.report.pareto import dominates
from codesign.study.fanout import build_variants
from codesign.study.search.front import Assignment, feasible_span, spread_along_front
from codesign.study.search.options import Option, configuration_variant
from codesign.study.search.results import LayerChoice, VerifiedConfiguration
from codesign.study.study import Study
from codesign.study.variants import run_variant


@dataclasses.dataclass(frozen=True)
class Goal:
    """Exactly one constraint: an energy budget (uJ per inference on the search datapath) or
    an accuracy floor (validation top-1, %)."""

    energy_budget_uj: float | None = None
    accuracy_floor: float | None = None

    def __post_init__(self) -> None:
        if (self.energy_budget_uj is None) == (self.accuracy_floor is None):
            raise ConfigError("give exactly one of --energy-budget-uj and --accuracy-floor")

    @property
    def objective(self) -> str:
        if self.energy_budget_uj is not None:
            return (
                f"minimise predicted accuracy drop within {self.energy_budget_uj} uJ per inference"
            )
        return f"minimise energy keeping predicted top-1 >= {self.accuracy_floor} %"

    def met_by(self, result: VariantResult, datapath: str) -> bool:
        """Validation top-1 (never test) against the floor, measured energy against --energy-budget-uj."""
        if self.accuracy_floor is not None:
            return result.val_top1 >= self.accuracy_floor
        assert self.energy_budget_uj is not None
        return result.on(datapath).energy_uj_per_inference <= self.energy_budget_uj


class Builds:
    """Front entries built as recipe variants named ``search-<index>``, each at most once."""

    def __init__(
        self,
        study: Study,
        spec: SearchSpec,
        options: Sequence[Option],
        layer_names: Sequence[str],
        front: Sequence[Assignment],
        force: bool,
    ) -> None:
        self.study, self.spec, self.options = study, spec, options
        self.layer_names, self.front, self.force = layer_names, front, force
        self.results: dict[int, VariantResult] = {}  # by front index, in build order
        # Built ahead in parallel; each counts as a build only once the choice asks for it.
        self.prefetched: dict[int, VariantResult] = {}

    def __len__(self) -> int:
        return len(self.results)

    def choices(self, index: int) -> list[Option]:
        return [self.options[i] for i in self.front[index].picks]

    def variant(self, index: int) -> VariantSpec:
        return configuration_variant(
            f"search-{index}", self.layer_names, self.choices(index), self.spec
        )

    def prefetch(self, indices: Sequence[int], jobs: int) -> None:
        """Build the front entries ``indices`` in ``jobs`` processes ahead of the choice (with
        one job, nothing: they are built when asked for)."""
        if jobs > 1 and len(indices) > 1:
            variants = [self.variant(i) for i in indices]
            built = build_variants(self.study, variants, force=self.force, jobs=jobs)
            self.prefetched.update(zip(indices, built, strict=True))

    def result(self, index: int) -> VariantResult:
        if index not in self.results:
            if index in self.prefetched:
                self.results[index] = self.prefetched.pop(index)
            else:
                variant = self.variant(index)
                self.results[index] = run_variant(self.study, variant, force=self.force)
        return self.results[index]

    def meets(self, index: int, goal: Goal) -> bool:
        return goal.met_by(self.result(index), self.spec.datapath)


def next_within_budget(
    front: Sequence[Assignment],
    after: int,
    energy_budget_uj: float,
    fixed_energy_uj: float,
    measured_over_predicted: float,
) -> int:
    """The first front index past ``after`` whose predicted energy (uJ per inference, the
    ``fixed_energy_uj`` of the layers outside the search included), scaled by
    ``measured_over_predicted``, fits ``energy_budget_uj``; ``len(front)`` if none does.

    >>> front = [Assignment(0.0, e, []) for e in (10.0, 9.9, 9.8, 9.5)]
    >>> next_within_budget(front, 0, 10.0, 0.0, 10.3 / 10.0)
    3
    """
    for index in range(after + 1, len(front)):
        predicted = front[index].energy_uj_per_inference + fixed_energy_uj
        if predicted * measured_over_predicted <= energy_budget_uj:
            return index
    return len(front)


def choose(builds: Builds, guess: int, goal: Goal, fixed_energy_uj: float = 0.0) -> int | None:
    """The front index the constraint picks after building, starting from the predicted
    ``guess``; None when no build within ``verify`` meets it. Under an energy budget a build
    that misses it says by how much the predictions run low there (measured over predicted
    energy, ``fixed_energy_uj`` of the layers outside the search included), and the next
    build is the first cheaper entry that fits once corrected by that: stepping one entry at
    a time spends the builds on near-copies of the miss."""
    budget = builds.spec.verify
    if goal.accuracy_floor is None:
        assert goal.energy_budget_uj is not None
        index = guess
        while len(builds) < budget and index < len(builds.front):
            if builds.meets(index, goal):
                return index
            measured = builds.result(index).on(builds.spec.datapath).energy_uj_per_inference
            predicted = builds.front[index].energy_uj_per_inference + fixed_energy_uj
            index = next_within_budget(
                builds.front,
                index,
                goal.energy_budget_uj,
                fixed_energy_uj,
                max(measured / predicted, 1.0) if predicted > 0 else 1.0,
            )
        return None
    # Bisection between the safe end (index 0, the reference assignment) and the guess.
    if builds.meets(guess, goal):
        return guess
    low, high = 0, guess
    while len(builds) < budget and high - low > 1:
        middle = (low + high) // 2
        if builds.meets(middle, goal):
            low = middle
        else:
            high = middle
    passing = [i for i in builds.results if builds.meets(i, goal)]
    return max(passing) if passing else None


def planned_builds(builds: Builds, guess: int, goal: Goal) -> list[int]:
    """The front indices :func:`choose` and :func:`spread` build under an energy budget when
    the first guess meets it (predicted energies are close to the measured ones): the guess,
    then the spread below it, ``verify`` in all. Under an accuracy floor each build decides
    the next, so nothing is planned."""
    if goal.accuracy_floor is not None:
        return []
    span = feasible_span(builds.front, guess, None)
    return [guess, *spread_along_front(builds.front, span)][: builds.spec.verify]


def spread(builds: Builds, chosen: int | None, goal: Goal) -> None:
    """The builds left over verify the rest of the front the constraint allows, so the report
    shows a measured front rather than one point."""
    if chosen is None:
        return
    span = feasible_span(builds.front, chosen, goal.accuracy_floor)
    for index in spread_along_front(builds.front, span):
        if len(builds) >= builds.spec.verify:
            break
        builds.result(index)


def judge(
    builds: Builds,
    chosen: int | None,
    goal: Goal,
    uniform: Sequence[VariantResult],
    base_top1: float,
    fixed_energy_uj: float,
) -> tuple[VerifiedConfiguration, ...]:
    """Every build by front index, with its predictions (validation top-1 from ``base_top1``,
    energy with the ``fixed_energy_uj`` of the layers outside the search), choices, the
    ``uniform`` recipe variants it dominates on the search datapath with the paired test of
    each (McNemar on the test images, at the study's seed), and the verdicts."""
    datapath = builds.spec.datapath
    seed = builds.study.recipe.seed
    verified = []
    for index in sorted(builds.results):
        result = builds.results[index]
        entry = builds.front[index]
        mine = (result.on(datapath).energy_uj_per_inference, result.top1)
        beaten = tuple(
            u for u in uniform if dominates(mine, (u.on(datapath).energy_uj_per_inference, u.top1))
        )
        runs = {result.variant: {seed: result}, **{u.variant: {seed: u} for u in beaten}}
        verified.append(
            VerifiedConfiguration(
                result=result,
                predicted_top1=base_top1 - entry.drop_points,
                predicted_energy_uj_per_inference=entry.energy_uj_per_inference + fixed_energy_uj,
                choices=tuple(
                    LayerChoice(name, o.weight_bits, o.act_bits, o.sparsity)
                    for name, o in zip(builds.layer_names, builds.choices(index), strict=True)
                ),
                dominates=tuple(u.variant for u in beaten),
                dominance_tests=tuple(
                    judge_claim(result.variant, u.variant, runs, (seed,), datapath) for u in beaten
                ),
                chosen=index == chosen,
                meets_constraint=builds.meets(index, goal),
            )
        )
    return tuple(verified)
