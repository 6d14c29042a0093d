"""``codesign run``: every variant of a recipe (or the ones named), then the report files;
``codesign report``: the report files from the variants already cached.

Each variant is independent (see :mod:`codesign.study.variants`): a killed run loses at most
the variant in flight, and a resumed run's ``results.json`` equals an uninterrupted one's. The
variants may be built by many processes at once (:mod:`codesign.study.fanout`); the report is
written once all of them are in the cache, by any later run or by :func:`report_study`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codesign import distributed
from codesign.errors import ConfigError, ResultError
from codesign.pipeline.results import VariantResult
from codesign.recipe import Recipe
from codesign.runtime import Runtime
from codesign.study.export import export_variant
from codesign.study.fanout import build_tasks, select_variants
from codesign.study.manifest import read_manifest, write_manifest
from codesign.study.seeds import seed_tasks
from codesign.study.study import Study, check_out_dir, open_study
from codesign.study.variants import VARIANT_FILE, read_cached

if TYPE_CHECKING:
    from codesign.study.search.results import SearchResult


def run_study(
    study: Study,
    force: bool = False,
    *,
    variants: Sequence[str] | None = None,
    jobs: int = 1,
) -> list[VariantResult]:
    """The recipe's variants (those named in ``variants``; all for None), in recipe order,
    built in ``jobs`` processes alongside any other process working on the same OUT; returns
    their results: every variant at the recipe's first seed, then the ones that train at each
    other seed (see :mod:`codesign.study.seeds`). Writes ``OUT/study.json`` first (see
    :mod:`codesign.study.manifest`). Variants with ``export = true`` are written as ONNX too
    (:func:`codesign.study.export.export_variant`)."""
    selected = select_variants(study.recipe, variants)
    if any(variant.export for variant in selected):
        from codesign.export import require_onnx

        require_onnx()  # before any variant runs: a missing extra never costs a build
    if jobs > 1 and study.runtime.distributed:
        raise ConfigError(
            "--jobs builds variants in local worker processes and cannot be combined with "
            "torchrun: drop --jobs (the ranks build each variant together)"
        )
    if study.runtime.is_writer:
        write_manifest(study)
    distributed.barrier()
    results = build_tasks(study, seed_tasks(study.recipe, selected), force=force, jobs=jobs)
    if study.runtime.is_writer:
        for variant in selected:
            if variant.export:  # the ONNX file of the build at the first seed, beside its model
                export_variant(study, variant)
    distributed.barrier()
    return results


def write_study_report(
    out: Path,
    resolved: Mapping[str, Any],
    scored: Sequence[VariantResult],
    search: SearchResult | None = None,
    search_seeds: Sequence[VariantResult] = (),
) -> dict[str, Any]:
    """Write every report file of a study into ``out`` from its resolved recipe (JSON form),
    its scored variants (every seed) and the search with its configurations rebuilt at the
    other seeds, print the summary table; returns the ``results.json`` object."""
    from codesign.report import build_results, summary_table, write_report

    results = build_results(resolved, scored, search, search_seeds)
    first = results.seed
    timings = {
        v.variant if v.seed == first else f"{v.variant} (seed {v.seed})": v.timing
        for v in [*scored, *search_seeds]
    }
    figures_from = list(results.variants) + ([v.result for v in search.verified] if search else [])
    if distributed.is_writer():
        write_report(out, results, resolved, figures_from, timings)
        print(summary_table(results))
        print(f"report: {out / 'report.html'}")
    distributed.barrier()
    return results.to_json()


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    search: SearchResult | None = None,
    search_seeds: Sequence[VariantResult] = (),
    study: Study | None = None,
    scored: list[VariantResult] | None = None,
    variants: Sequence[str] | None = None,
    jobs: int = 1,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Run (or resume) the variants of ``recipe`` into ``out`` and write the report files.

    Returns the ``results.json`` object. ``search`` (from
    :func:`codesign.study.search.run_search`) adds the co-design search's verified
    configurations to the same report, ``search_seeds`` those of them rebuilt at the recipe's
    other seeds (:func:`codesign.study.seeds.search_at_other_seeds`); ``study`` and ``scored``
    (its :func:`run_study`
    results) skip opening the study and re-reading its variants when the caller has them.
    ``variants`` names some of the recipe's variants: only those are built, and unless they
    are all of them no report is written (a report of part of a study would rank part of
    it); the return value is then ``{"built": [names], "report": None}``. ``jobs`` worker
    processes build them.
    ``runtime`` (default: one CPU process) is where a study opened here computes; under
    torchrun every rank builds every variant and rank 0 alone writes the files.
    """
    out = Path(out)
    check_out_dir(out)
    selected = select_variants(recipe, variants)  # an unknown name stops here, before work
    study = study or open_study(recipe, out, progress, runtime)
    if scored is None:
        scored = run_study(study, force=force, variants=variants, jobs=jobs)
    if len(selected) < len(recipe.variants):
        print(
            f"built {len(selected)} of the {len(recipe.variants)} variants into "
            f"{out / 'variants'}; once every variant is built, `codesign report {out}` "
            "writes the report"
        )
        return {"built": list(dict.fromkeys(v.variant for v in scored)), "report": None}
    return write_study_report(out, recipe.to_dict(), scored, search, search_seeds)


def report_study(out: str | Path) -> dict[str, Any]:
    """Write the report files of the study in ``out`` from its cached variants (built by
    ``codesign run``, possibly in many processes), building nothing; returns the
    ``results.json`` object. A ConfigError names the variants not (validly) cached yet."""
    out = Path(out)
    if not out.is_dir():
        raise ConfigError(f"{out} is not a directory: give the --out of a `codesign run`")
    manifest = read_manifest(out)
    configs = {v["name"]: v for v in manifest.resolved["variants"]}
    scored, missing = [], []
    for entry in manifest.variants:
        try:
            result = read_cached(out / "variants" / entry.directory / VARIANT_FILE, entry.key)
        except ResultError:
            missing.append(entry.name)
            continue
        if result.variant != entry.name or result.config != configs[entry.name]:
            # The same steps cached under another spelling: `codesign run` renames it.
            missing.append(entry.name)
            continue
        scored.append(result)
    missing = list(dict.fromkeys(missing))  # a variant missing at several seeds, once
    if missing:
        raise ConfigError(
            f"{out}: variant{'s' if len(missing) > 1 else ''} not built yet: "
            f"{', '.join(missing)}; build {'them' if len(missing) > 1 else 'it'} with "
            f"`codesign run RECIPE --out {out} --variants {','.join(missing)}` (RECIPE: the "
            f"recipe named {manifest.recipe!r})"
        )
    return write_study_report(out, manifest.resolved, scored)
