"""``codesign search``: measure, solve, choose, verify, spread, judge.

1. Measure (:mod:`.tables`): per-layer energy of every option and per-layer accuracy drop
   from uniform models trained like the verified configurations, on validation images only
   (the test split never steers the choice).
2. Solve (:mod:`.front`): predicted top-1 = trained reference's top-1 - sum of charged
   drops (at least one sensitivity image each), each option's scaled so that its uniform
   model's drop is predicted exactly; predicted energy = sum of per-layer energies; the
   multiple-choice knapsack gives the searched front.
3. Choose and verify (:mod:`.verify`): the constraint's first guess is built like any recipe
   variant and corrected along the front until a build meets it.
4. Spread: the builds left over measure the rest of the front the constraint allows.
5. Judge: each build against the recipe's uniform variants on the same datapath, and the
   predictions against the builds (:mod:`.agreement`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from codesign.errors import CodesignError, ConfigError
from codesign.pipeline.results import VariantResult
from codesign.recipe import Recipe, SearchSpec
from codesign.study.search.front import first_guess, solve_front
from codesign.study.search.options import option_variant, options_of, searchable_layers
from codesign.study.search.results import FrontEntry, SearchResult
from codesign.study.search.tables import cached_tables
from codesign.study.search.verify import Builds, Goal, choose, judge, planned_builds, spread
from codesign.study.study import Study


def check_search(recipe: Recipe, model: nn.Module, datapaths: Sequence[str]) -> None:
    """Raise what the search would raise about its own table (``search.datapath`` not among
    the ``datapaths`` of ``hardware.archs``; an option or ``keep_8bit`` pattern that does not
    fit ``model``) before any variant runs."""
    from codesign.pipeline import variant_steps
    from codesign.pipeline.checks import check_steps_fit

    spec = recipe.search or SearchSpec()
    if spec.datapath not in datapaths:
        raise ConfigError(
            f"search.datapath {spec.datapath!r} is not in hardware.archs: use one of "
            f"{', '.join(datapaths)}, or add it there"
        )
    for option in options_of(spec):
        variant = option_variant(option, spec, option.label)
        try:
            check_steps_fit(model, variant_steps(variant.sparsity, quant=variant.quant))
        except CodesignError as exc:
            raise type(exc)(f"search option {option.label}: {exc}") from None


def run_search(
    study: Study,
    uniform: Sequence[VariantResult],
    *,
    energy_budget_uj: float | None = None,
    accuracy_floor: float | None = None,
    force: bool = False,
    jobs: int = 1,
) -> SearchResult:
    """Measure, solve, verify. ``uniform`` are the recipe's scored variants, against which
    every verified configuration is compared on the search datapath (those built at the
    study's seed: the search runs at the first of a recipe's seeds). ``jobs`` processes build
    the uniform models and, under an energy budget, the configurations to verify."""
    goal = Goal(energy_budget_uj, accuracy_floor)
    uniform = [u for u in uniform if u.seed == study.recipe.seed]
    spec = study.recipe.search or SearchSpec()
    torch.manual_seed(study.recipe.seed)
    options = options_of(spec)
    layer_names = searchable_layers(study.float_model, spec)
    tables = cached_tables(study, spec, options, layer_names, force, jobs)
    # Each layer's share from the swaps, each option's total from its uniform model.
    front = solve_front(tables.predicted_drops(), tables.layer_energy_uj_per_inference)
    # Drops are measured on the sensitivity images; predictions start from the trained
    # reference's top-1 on the whole validation split, the figure a build is judged by.
    base_top1 = tables.uniform_val_top1[0]
    fixed_energy = tables.fixed_energy_uj_per_inference
    guess = first_guess(front, base_top1, fixed_energy, energy_budget_uj, accuracy_floor)
    builds = Builds(study, spec, options, layer_names, front, force)
    builds.prefetch(planned_builds(builds, guess, goal), jobs)
    chosen = choose(builds, guess, goal, fixed_energy)
    spread(builds, chosen, goal)
    assert study.dataset.validation_info is not None
    return SearchResult(
        objective=goal.objective,
        datapath=spec.datapath,
        sensitivity_samples=spec.sensitivity_samples,
        validation_subset=study.dataset.validation_info,
        sensitivity_subset=tables.sensitivity_subset,
        reference_top1_sensitivity=tables.reference_top1,
        reference_val_top1=base_top1,
        options=tuple(o.label for o in options),
        layers=tuple(layer_names),
        sensitivity_drop_points=tuple(map(tuple, tables.drops.round(4).tolist())),
        layer_energy_uj_per_inference=tuple(
            map(tuple, tables.layer_energy_uj_per_inference.tolist())
        ),
        front=tuple(
            FrontEntry(
                base_top1 - a.drop_points,
                a.energy_uj_per_inference + fixed_energy,
                tuple(options[i].label for i in a.picks),
            )
            for a in front
        ),
        chosen=f"search-{chosen}" if chosen is not None else None,
        verified=judge(builds, chosen, goal, uniform, base_top1, fixed_energy),
        uniform_val_top1=tables.uniform_val_top1,
    )
