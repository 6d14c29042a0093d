"""How much of a study's accuracy ordering survives another training seed.

A study (``codesign run`` / ``codesign search`` output) trains some variants (fine-tuning,
QAT) and the search's verified configurations with the recipe's one seed. On a test split of
~1000 images one training run moves top-1 by several images, as much as the margins the
search's "dominates" verdicts rest on. :func:`seed_spread` re-builds the trained variants (or
the ones named) with other seeds, into the same study directory (the seed is part of every
variant's cache key, so nothing is overwritten and a re-run reuses what is done), and reports:

- per variant: top-1 at every seed (the study's own seed included), mean, min, max, and the
  energy per inference on the datapath (uJ, mean over seeds);
- per verified search configuration: the recipe variants it dominates at each seed (same seed
  on both sides) and on the seed means.

Variants that train nothing (PTQ, one-shot pruning) are seed-independent: the seed only drives
training (data order, augmentation); calibration and pruning are deterministic. They keep the
study's figures unless named, which re-builds them too. A trained variant not named is unknown
at the other seeds: it is not compared there, and no "dominates every recipe variant" verdict
is given for those seeds.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codesign.errors import ConfigError, ResultError
from codesign.io import write_json_atomic
from codesign.pipeline.results import VariantResult
from codesign.recipe import VariantSpec, recipe_from_dict
from codesign.report.pareto import dominates
from codesign.report.results import RESULTS_SCHEMA, Point
from codesign.study.search.results import SearchResult
from codesign.study.study import open_study
from codesign.study.variants import run_variant


@dataclasses.dataclass(frozen=True)
class SeedPoint:
    """One variant at one seed: test top-1 (%) and energy (uJ per inference) on the datapath,
    "recipe" or "search", and whether it trains (so depends on the seed)."""

    top1: float
    energy_uj_per_inference: float
    source: str
    trained: bool


@dataclasses.dataclass(frozen=True)
class SpreadRow:
    """A variant over the seeds: top-1 (%) at every seed where it is known (None elsewhere),
    mean/min/max over those, and the mean energy (uJ per inference) on ``datapath``."""

    variant: str
    source: str
    trained: bool
    seeds: tuple[int, ...]
    top1: tuple[float | None, ...]
    top1_mean: float
    top1_min: float
    top1_max: float
    energy_uj_per_inference_mean: float
    datapath: str

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seeds": list(self.seeds), "top1": list(self.top1)}


@dataclasses.dataclass(frozen=True)
class Dominance:
    """A search configuration's verdicts: the recipe variants it dominates at each seed (by
    seed, as a string; None where it was not re-built), the seeds at which it dominates every
    recipe variant (all of them known there), the ones it dominates on the seed means (None
    unless known at every seed), and the recipe variants not re-built at the other seeds."""

    dominates_per_seed: Mapping[str, list[str] | None]
    dominates_every_recipe_variant_at_seeds: list[int]
    dominates_on_means: list[str] | None
    unknown_at_other_seeds: list[str]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dominates_per_seed": dict(self.dominates_per_seed)}


@dataclasses.dataclass(frozen=True)
class SeedSpread:
    """The whole report (``seed_spread.json``)."""

    study: str
    datapath: str
    seeds: tuple[int, ...]
    rebuilt: tuple[str, ...]
    variants: tuple[SpreadRow, ...]
    search: Mapping[str, Dominance]

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "datapath": self.datapath,
            "seeds": list(self.seeds),
            "rebuilt": list(self.rebuilt),
            "variants": [row.to_json() for row in self.variants],
            "search": {name: verdict.to_json() for name, verdict in self.search.items()},
        }


BySeed = dict[int, dict[str, SeedPoint]]


def trains(variant: VariantSpec) -> bool:
    finetunes = variant.finetune is not None and variant.finetune.epochs > 0
    return finetunes or (variant.qat is not None and variant.qat.epochs > 0)


def load_study_files(study_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results.json, recipe.json) of a finished study, or a ConfigError saying what to run."""
    files = [study_dir / "results.json", study_dir / "recipe.json"]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not found: give the --out directory of a finished "
            "`codesign run` or `codesign search`"
        )
    results = json.loads(files[0].read_text())
    if results.get("schema_version") != RESULTS_SCHEMA:
        raise ConfigError(
            f"{files[0]} has schema_version {results.get('schema_version')!r}, this script reads "
            f"{RESULTS_SCHEMA}: re-run the same `codesign run` / `codesign search` command"
        )
    return results, json.loads(files[1].read_text())


def _on(points: Mapping[str, Point], datapath: str) -> Point:
    if datapath not in points:
        raise ConfigError(
            f"datapath {datapath!r} was not simulated in this study "
            f"(it has {', '.join(points)}): pass --datapath"
        )
    return points[datapath]


def point_of(result: VariantResult, datapath: str, source: str, trained: bool) -> SeedPoint:
    """A fresh build's figures on ``datapath``."""
    try:
        energy = result.on(datapath).energy_uj_per_inference
    except ResultError:
        raise ConfigError(
            f"datapath {datapath!r} was not simulated in this study "
            f"(it has {', '.join(result.datapaths)}): pass --datapath"
        ) from None
    return SeedPoint(result.top1, energy, source, trained)


def spread_rows(by_seed: BySeed, datapath: str) -> list[SpreadRow]:
    """One row per variant of the first seed (see :class:`SpreadRow`)."""
    seeds = list(by_seed)
    rows = []
    for name in by_seed[seeds[0]]:
        known = [by_seed[s][name] for s in seeds if name in by_seed[s]]
        top1 = [p.top1 for p in known]
        rows.append(
            SpreadRow(
                variant=name,
                source=known[0].source,
                trained=known[0].trained,
                seeds=tuple(seeds),
                top1=tuple(by_seed[s][name].top1 if name in by_seed[s] else None for s in seeds),
                top1_mean=statistics.fmean(top1),
                top1_min=min(top1),
                top1_max=max(top1),
                energy_uj_per_inference_mean=statistics.fmean(
                    p.energy_uj_per_inference for p in known
                ),
                datapath=datapath,
            )
        )
    return rows


def _dominates(a: SeedPoint, b: SeedPoint) -> bool:
    return dominates((a.energy_uj_per_inference, a.top1), (b.energy_uj_per_inference, b.top1))


def dominance(by_seed: BySeed, rows: Sequence[SpreadRow]) -> dict[str, Dominance]:
    """For every search configuration: the recipe variants it dominates at each seed (both
    sides trained with that seed) and on the seed means (strictly less energy, at least the
    top-1). A verdict over "every recipe variant" needs all of them known at that seed."""
    seeds = list(by_seed)
    complete = {r.variant for r in rows if None not in r.top1}
    means = {r.variant: (r.energy_uj_per_inference_mean, r.top1_mean) for r in rows}
    recipe_names = [r.variant for r in rows if r.source == "recipe"]
    verdicts = {}
    for name in (r.variant for r in rows if r.source == "search"):
        per_seed: dict[str, list[str] | None] = {}
        for seed in seeds:
            scored = by_seed[seed]
            per_seed[str(seed)] = (
                None
                if name not in scored
                else [
                    o for o in recipe_names if o in scored and _dominates(scored[name], scored[o])
                ]
            )
        every = [
            seed
            for seed in seeds
            if per_seed[str(seed)] is not None
            and all(o in by_seed[seed] for o in recipe_names)
            and len(per_seed[str(seed)] or []) == len(recipe_names)
        ]
        on_means = None
        if name in complete:
            on_means = [
                o for o in recipe_names if o in complete and dominates(means[name], means[o])
            ]
        verdicts[name] = Dominance(
            dominates_per_seed=per_seed,
            dominates_every_recipe_variant_at_seeds=every,
            dominates_on_means=on_means,
            unknown_at_other_seeds=sorted(set(recipe_names) - complete),
        )
    return verdicts


def seed_spread(
    study_dir: Path,
    seeds: Sequence[int],
    variants: Sequence[str] | None = None,
    datapath: str | None = None,
    out: Path | None = None,
    progress: bool = True,
) -> SeedSpread:
    """Re-build ``variants`` (default: every trained one) of the finished study in
    ``study_dir`` with each of ``seeds``, judge them and write ``out`` (default
    ``study_dir/seed_spread.json``). ``datapath`` defaults to the search's (else "scnn")."""
    results, recipe_data = load_study_files(study_dir)
    search = SearchResult.from_json(results["search"]) if results.get("search") else None
    # The verified search configurations are recipe variants with per-layer overrides: parse
    # them with the recipe's own reader.
    verified = [v.result.config for v in search.verified] if search is not None else []
    recipe_data = {**recipe_data, "variants": [*recipe_data["variants"], *verified]}
    recipe = recipe_from_dict(recipe_data, where=str(study_dir / "recipe.json"))
    points: dict[str, dict[str, Point]] = {}
    for p in (Point.from_json(p) for p in results["points"]):
        points.setdefault(p.variant, {})[p.datapath] = p
    datapath = datapath or (search.datapath if search is not None else "scnn")
    specs = {v.name: v for v in recipe.variants}
    unscored = [n for n in specs if n not in points]
    if unscored:
        raise ConfigError(
            f"variant {unscored[0]!r} has no result in {study_dir / 'results.json'}: "
            "finish the study first (re-run the same command; it resumes)"
        )
    if variants:
        unknown = [n for n in variants if n not in specs]
        if unknown:
            raise ConfigError(
                f"no variant {unknown[0]!r} in {study_dir}: the study has {', '.join(specs)}"
            )
        selected = list(variants)
    else:
        selected = [n for n, spec in specs.items() if trains(spec)]
    if not selected:
        raise ConfigError(
            "nothing to re-run: the study trains no variant; name some with --variants"
        )
    all_seeds = [recipe.seed] + [s for s in dict.fromkeys(seeds) if s != recipe.seed]
    by_seed: BySeed = {}
    for seed in all_seeds:
        study = None
        by_seed[seed] = {}
        for name, spec in specs.items():
            trained = trains(spec)
            first = next(iter(points[name].values()))
            if seed == recipe.seed or (name not in selected and not trained):
                p = _on(points[name], datapath)
                by_seed[seed][name] = SeedPoint(
                    p.top1, p.energy_uj_per_inference, p.source, trained
                )
            elif name in selected:
                if study is None:
                    study = open_study(dataclasses.replace(recipe, seed=seed), study_dir, progress)
                print(f"seed {seed}: {name}", file=sys.stderr)
                result = run_variant(study, spec)
                by_seed[seed][name] = point_of(result, datapath, first.source, trained)
            # else: trained with the study's seed only, unknown at this one
    rows = spread_rows(by_seed, datapath)
    report = SeedSpread(
        study=str(study_dir),
        datapath=datapath,
        seeds=tuple(all_seeds),
        rebuilt=tuple(selected),
        variants=tuple(rows),
        search=dominance(by_seed, rows),
    )
    write_json_atomic(out or study_dir / "seed_spread.json", report.to_json())
    return report


def format_table(report: SeedSpread) -> str:
    """Top-1 per seed, mean, min, max and uJ per variant, then each configuration's verdicts."""
    head = "variant".ljust(24) + "".join(f"seed {s}".rjust(9) for s in report.seeds)
    lines = [head + "mean".rjust(8) + "min".rjust(8) + "max".rjust(8) + "uJ".rjust(9)]
    for r in report.variants:
        cells = "".join("       --" if t is None else f"{t:9.2f}" for t in r.top1)
        lines.append(
            r.variant[:23].ljust(24)
            + cells
            + f"{r.top1_mean:8.2f}{r.top1_min:8.2f}{r.top1_max:8.2f}"
            + f"{r.energy_uj_per_inference_mean:9.2f}"
        )
    for name, v in report.search.items():
        means = v.dominates_on_means
        lines.append(
            f"{name}: dominates every recipe variant at seeds "
            f"{v.dominates_every_recipe_variant_at_seeds or 'none'}; on the means: "
            + ("(not re-built)" if means is None else ", ".join(means) or "nothing")
            + (
                f"; not re-built: {', '.join(v.unknown_at_other_seeds)}"
                if v.unknown_at_other_seeds
                else ""
            )
        )
    return "\n".join(lines)
