"""Seeds folded into a recipe: which (seed, variant) builds a study makes.

On a test split of ~1000 images one training run moves top-1 by several images, as much as
the margins a "dominates" verdict may rest on. A recipe with ``seeds = [s0, s1, ...]`` builds
every variant that trains (fine-tuning, QAT; :func:`trains`) at each seed, and every other
variant once, at ``s0``: the seed only drives training (data order, augmentation), while
calibration and pruning are deterministic, so a PTQ or one-shot pruned variant is the same
model at every seed. The search runs at ``s0``; its verified configurations that train are
then rebuilt at the other seeds (:func:`search_at_other_seeds`). The seed is part of every
variant's cache key, so each build has its own directory and lock, and ``seeds = [0, 1, 2]``
reuses what a ``seed = 0`` study built. The report gives every variant's mean and spread over
the seeds and judges fronts and dominance on the seed means (:mod:`codesign.report.seeds`).
"""

from __future__ import annotations

from collections.abc import Sequence

from codesign.pipeline.results import VariantResult
from codesign.recipe import Recipe, SearchSpec, VariantSpec
from codesign.report.seeds import trains as config_trains
from codesign.study.fanout import Task, build_tasks
from codesign.study.search.options import configuration_variant
from codesign.study.search.results import SearchResult
from codesign.study.study import Study


def trains(variant: VariantSpec) -> bool:
    """Whether the variant trains (a fine-tuning or QAT table with epochs > 0), so that its
    build depends on the seed."""
    return config_trains(variant.to_dict())


def seed_tasks(recipe: Recipe, variants: Sequence[VariantSpec]) -> list[Task]:
    """The (seed, variant) builds of ``variants``: all of them at the first seed, then the ones
    that train at each other seed of the recipe, seed by seed in recipe order."""
    first, *others = recipe.all_seeds
    return [(first, v) for v in variants] + [
        (seed, v) for seed in others for v in variants if trains(v)
    ]


def search_at_other_seeds(
    study: Study, search: SearchResult, *, force: bool = False, jobs: int = 1
) -> list[VariantResult]:
    """The search's verified configurations that train, built at every seed of the recipe but
    the first (where the search ran and built them), from their per-layer choices exactly as
    the search built them."""
    spec = study.recipe.search or SearchSpec()
    variants = [
        configuration_variant(
            v.result.variant, [c.name for c in v.choices], [c.option for c in v.choices], spec
        )
        for v in search.verified
    ]
    others = study.recipe.all_seeds[1:]
    tasks = [(seed, v) for seed in others for v in variants if trains(v)]
    return build_tasks(study, tasks, force=force, jobs=jobs) if tasks else []
