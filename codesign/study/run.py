"""``codesign run``: every variant of a recipe, then the report files.

Each variant is independent (see :mod:`codesign.study.variants`): a killed run loses at most
the variant in flight, and a resumed run's ``results.json`` equals an uninterrupted one's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from codesign.errors import CodesignError
from codesign.pipeline.results import VariantResult
from codesign.recipe import Recipe
from codesign.study.export import export_variant
from codesign.study.study import Study, check_out_dir, open_study
from codesign.study.variants import run_variant

if TYPE_CHECKING:
    from codesign.study.search.results import SearchResult


def run_study(study: Study, force: bool = False) -> list[VariantResult]:
    """Every variant of the recipe, in recipe order; returns their results. Variants with
    ``export = true`` are written as ONNX too (:func:`codesign.study.export.export_variant`)."""
    exports = any(variant.export for variant in study.recipe.variants)
    if exports:
        from codesign.export import require_onnx

        require_onnx()  # before any variant runs: a missing extra never costs a build
    results = []
    bar = tqdm(study.recipe.variants, desc="variants", unit="variant", disable=not study.progress)
    for variant in bar:
        bar.set_postfix_str(variant.name)
        try:
            results.append(run_variant(study, variant, force=force))
            if variant.export:
                export_variant(study, variant)
        except CodesignError as exc:
            raise type(exc)(f"variant {variant.name!r}: {exc}") from None
    return results


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    search: SearchResult | None = None,
    study: Study | None = None,
    scored: list[VariantResult] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every variant of ``recipe`` into ``out`` and write the report files.

    Returns the ``results.json`` object. ``search`` (from
    :func:`codesign.study.search.run_search`) adds the co-design search's verified
    configurations to the same report; ``study`` and ``scored`` (its :func:`run_study`
    results) skip opening the study and re-reading its variants when the caller has them.
    """
    from codesign.report import build_results, summary_table, write_report

    out = Path(out)
    check_out_dir(out)
    study = study or open_study(recipe, out, progress)
    scored = scored if scored is not None else run_study(study, force=force)
    resolved = recipe.to_dict()
    results = build_results(resolved, scored, search)
    timings = {v.variant: v.timing for v in scored}
    figures_from = scored + ([v.result for v in search.verified] if search else [])
    write_report(out, results, resolved, figures_from, timings)
    print(summary_table(results))
    print(f"report: {out / 'report.html'}")
    return results.to_json()
