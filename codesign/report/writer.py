"""Write every report file of a study into OUT, each atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codesign.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from codesign.recipe import slug
from codesign.report.html import render_report
from codesign.report.plots import layer_density_png, layer_energy_png, pareto_png
from codesign.report.results import StudyResults, write_results

if TYPE_CHECKING:
    from codesign.pipeline.results import Timing, VariantResult


def write_report(
    out: Path,
    results: StudyResults,
    recipe: Mapping[str, Any],
    scored: Sequence[VariantResult],
    timings: Mapping[str, Timing] | None = None,
) -> list[Path]:
    """results.json, results.csv, recipe.json, pareto.png, layer_density.png,
    layer_energy_<datapath>.png and report.html; returns the paths written.

    ``scored`` are the full variant results (with per-datapath layer rows), search-verified
    configurations included, for the per-layer figures.
    """
    write_results(out, results)
    write_json_atomic(out / "recipe.json", recipe)
    figures = [("accuracy vs energy per inference", pareto_png(results.points))]
    figures.append(
        ("measured weight and activation densities per layer", layer_density_png(scored))
    )
    datapaths = list(scored[0].datapaths)
    for datapath in datapaths:
        figures.append((f"per-layer energy on {datapath}", layer_energy_png(scored, datapath)))
    names = ["pareto.png", "layer_density.png"] + [f"layer_energy_{slug(d)}.png" for d in datapaths]
    written = [out / "results.json", out / "results.csv", out / "recipe.json"]
    for name, (_, png) in zip(names, figures, strict=True):
        written.append(write_bytes_atomic(out / name, png))
    written.append(
        write_text_atomic(out / "report.html", render_report(results, recipe, figures, timings))
    )
    return written
