"""A study's results across its seeds: which build stands for a variant at each seed, the
per-variant mean and spread of top-1, and the seed-mean figures fronts and claims are judged on.

A recipe with ``seeds = [s0, s1, ...]`` builds every variant that trains (fine-tuning, QAT) at
each seed and every other variant once, at ``s0``: the seed only drives training (data order,
augmentation), so a PTQ or one-shot pruned variant is the same model at every seed and its one
build stands for all of them. With one seed every figure here is that seed's.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from codesign.errors import ResultError
from codesign.stats import top1_ci95

if TYPE_CHECKING:
    from codesign.pipeline.results import VariantResult

# name -> seed -> the build of that variant at that seed
Runs = Mapping[str, Mapping[int, "VariantResult"]]


def trains(config: Mapping[str, Any]) -> bool:
    """Whether a variant (its ``VariantSpec.to_dict()`` form) trains, so depends on the seed:
    a fine-tuning or QAT table with at least one epoch."""
    return any((config.get(table) or {}).get("epochs", 0) > 0 for table in ("finetune", "qat"))


def group_runs(results: Iterable[VariantResult]) -> dict[str, dict[int, VariantResult]]:
    """Results by variant name, then seed, in the order first seen."""
    runs: dict[str, dict[int, VariantResult]] = {}
    for result in results:
        runs.setdefault(result.variant, {})[result.seed] = result
    return runs


def at_seeds(
    name: str, runs: Mapping[int, VariantResult], seeds: Sequence[int]
) -> list[VariantResult]:
    """The build that stands for variant ``name`` at each of ``seeds``: its own where it was
    built there, else (a seed-independent variant) its one build. A :class:`ResultError` for
    a variant that trains and lacks a seed."""
    if all(seed in runs for seed in seeds):
        return [runs[seed] for seed in seeds]
    first = runs.get(seeds[0]) or next(iter(runs.values()))
    if not trains(first.config):
        return [first] * len(seeds)
    missing = ", ".join(str(s) for s in seeds if s not in runs)
    raise ResultError(
        f"variant {name!r} trains but has no result at seed {missing}: build it at every seed "
        "of the recipe (re-run the same command; it resumes)"
    )


@dataclasses.dataclass(frozen=True)
class SeedRow:
    """One variant across the study's seeds: ``built_at`` (the seeds it was built at: one for
    a seed-independent variant), test top-1 (%) at every seed with its 95 % Wilson interval,
    their mean, min, max and sample standard deviation (points; None with a single seed)."""

    variant: str
    source: str
    built_at: tuple[int, ...]
    top1: tuple[float, ...]
    top1_ci95: tuple[tuple[float, float], ...]
    top1_mean: float
    top1_min: float
    top1_max: float
    top1_std: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "built_at": list(self.built_at),
            "top1": list(self.top1),
            "top1_ci95": [list(pair) for pair in self.top1_ci95],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeedRow:
        from codesign.io import check_json_keys

        check_json_keys(data, tuple(f.name for f in dataclasses.fields(cls)), "seed row")
        return cls(
            **{
                **data,
                "built_at": tuple(data["built_at"]),
                "top1": tuple(data["top1"]),
                "top1_ci95": tuple(tuple(pair) for pair in data["top1_ci95"]),
            }
        )


def seed_row(
    name: str, source: str, runs: Mapping[int, VariantResult], seeds: Sequence[int]
) -> SeedRow:
    """The :class:`SeedRow` of variant ``name``."""
    builds = at_seeds(name, runs, seeds)
    top1 = [r.top1 for r in builds]
    return SeedRow(
        variant=name,
        source=source,
        built_at=tuple(s for s in seeds if s in runs) or tuple(runs),
        top1=tuple(top1),
        top1_ci95=tuple(tuple(top1_ci95(r.top1, r.samples)) for r in builds),
        top1_mean=statistics.fmean(top1),
        top1_min=min(top1),
        top1_max=max(top1),
        top1_std=statistics.stdev(top1) if len(top1) > 1 else None,
    )


def mean_energy(
    name: str, runs: Mapping[int, VariantResult], seeds: Sequence[int], datapath: str
) -> float:
    """Energy per inference (uJ) on ``datapath``, mean over the seeds: training changes the
    activation sparsity the hardware sees, so it moves with the seed too."""
    return statistics.fmean(
        r.on(datapath).energy_uj_per_inference for r in at_seeds(name, runs, seeds)
    )
