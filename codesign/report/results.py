"""Variant results -> the ``results.json`` / ``results.csv`` shapes (pure data, no I/O but the
atomic writers)."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codesign.hw.summary import LayerSummary
from codesign.io import check_json_keys, csv_safe, write_json_atomic, write_text_atomic
from codesign.report.pareto import pareto_front
from codesign.stats import top1_ci95

if TYPE_CHECKING:
    from codesign.pipeline.results import VariantResult
    from codesign.study.search.results import SearchResult

RESULTS_SCHEMA = 3
POINT_COLUMNS = (
    "variant",
    "source",
    "datapath",
    "top1",
    "val_top1",
    "energy_uj_per_inference",
    "cycles",
    "compute_cycles",
    "stall_cycles",
    "bops",
    "effectual_bops",
    "weight_density",
    "act_density",
    "effectual_mac_fraction",
    "weight_sparsity",
)


@dataclasses.dataclass(frozen=True)
class Point:
    """One variant on one datapath: test and validation top-1 (%), energy (uJ) and cycles per
    inference with their breakdowns, bit operations per inference (dense and effectual),
    measured densities, and the per-layer rows.
    ``source``: "recipe" for a recipe variant, "search" for a verified search configuration."""

    variant: str
    source: str
    datapath: str
    top1: float
    top1_ci95: tuple[float, float]
    val_top1: float
    energy_uj_per_inference: float
    energy_by_component_uj_per_inference: Mapping[str, float]
    cycles: float
    compute_cycles: float
    stall_cycles: float
    bops: int
    effectual_bops: float
    weight_density: float
    act_density: float
    effectual_mac_fraction: float
    weight_sparsity: float
    layers: tuple[LayerSummary, ...]

    def to_json(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        row["energy_by_component_uj_per_inference"] = dict(
            self.energy_by_component_uj_per_inference
        )
        row["layers"] = [layer.to_json() for layer in self.layers]
        row["top1_ci95"] = list(self.top1_ci95)
        return row

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Point:
        check_json_keys(data, tuple(f.name for f in dataclasses.fields(cls)), "point")
        layers = tuple(LayerSummary.from_json(r) for r in data["layers"])
        return cls(**{**data, "top1_ci95": tuple(data["top1_ci95"]), "layers": layers})


def points_of(variant: VariantResult, source: str = "recipe") -> list[Point]:
    """One point per datapath of a scored variant."""
    return [
        Point(
            variant=variant.variant,
            source=source,
            datapath=name,
            top1=variant.top1,
            top1_ci95=tuple(top1_ci95(variant.top1, variant.samples)),
            val_top1=variant.val_top1,
            energy_uj_per_inference=cost.energy_uj_per_inference,
            energy_by_component_uj_per_inference=cost.energy_by_component_uj_per_inference,
            cycles=cost.cycles,
            compute_cycles=cost.compute_cycles,
            stall_cycles=cost.stall_cycles,
            bops=cost.bops,
            effectual_bops=cost.effectual_bops,
            weight_density=variant.weight_density,
            act_density=variant.act_density,
            effectual_mac_fraction=variant.effectual_mac_fraction,
            weight_sparsity=variant.weight_sparsity,
            layers=cost.layers,
        )
        for name, cost in variant.datapaths.items()
    ]


def fronts(points: Sequence[Point]) -> dict[str, list[str]]:
    """Per datapath, the variants on its accuracy-vs-energy Pareto front (rising energy)."""
    by_datapath: dict[str, list[Point]] = {}
    for point in points:
        by_datapath.setdefault(point.datapath, []).append(point)
    return {
        name: [
            group[i].variant
            for i in pareto_front([(p.energy_uj_per_inference, p.top1) for p in group])
        ]
        for name, group in by_datapath.items()
    }


@dataclasses.dataclass(frozen=True)
class StudyResults:
    """What ``results.json`` holds: the recipe's name, seed and data spec, every recipe
    variant, the points (variant x datapath, search configurations included), the Pareto
    fronts per datapath, and the search if one ran."""

    recipe: str
    seed: int
    data: str
    variants: tuple[VariantResult, ...]
    points: tuple[Point, ...]
    pareto: Mapping[str, list[str]]
    search: SearchResult | None

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` object: variants without their per-datapath costs (those are
        in ``points``), timings or cache keys."""
        return {
            "schema_version": RESULTS_SCHEMA,
            "recipe": self.recipe,
            "seed": self.seed,
            "data": self.data,
            "variants": [v.summary_json() for v in self.variants],
            "points": [p.to_json() for p in self.points],
            "pareto": {name: list(names) for name, names in self.pareto.items()},
            "search": self.search.to_json() if self.search is not None else None,
        }


def build_results(
    recipe: Mapping[str, Any],
    variants: Sequence[VariantResult],
    search: SearchResult | None = None,
) -> StudyResults:
    """The whole study's results from the resolved recipe (its JSON form), the scored recipe
    variants and the search's verified configurations if any."""
    points = [p for v in variants for p in points_of(v)]
    searched = [c.result for c in search.verified] if search is not None else []
    points += [p for v in searched for p in points_of(v, source="search")]
    return StudyResults(
        recipe=recipe["name"],
        seed=recipe["seed"],
        data=recipe["data"]["source"],
        variants=tuple(variants),
        points=tuple(points),
        pareto=fronts(points),
        search=search,
    )


def results_csv(points: Sequence[Point]) -> str:
    """One CSV row per point; energy components as extra ``energy_<name>_uj_per_inference``
    columns."""
    components: list[str] = []
    for point in points:
        by_component = point.energy_by_component_uj_per_inference
        components += [c for c in by_component if c not in components]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*POINT_COLUMNS, *(f"energy_{c}_uj_per_inference" for c in components)])
    for point in points:
        writer.writerow(
            [csv_safe(getattr(point, c)) for c in POINT_COLUMNS]
            + [point.energy_by_component_uj_per_inference.get(c, 0.0) for c in components]
        )
    return buffer.getvalue()


def write_results(out: Path, results: StudyResults) -> None:
    write_json_atomic(out / "results.json", results.to_json())
    write_text_atomic(out / "results.csv", results_csv(results.points))


def on_front(results: StudyResults) -> set[tuple[str, str]]:
    """(datapath, variant) pairs on their datapath's Pareto front."""
    return {(d, v) for d, names in results.pareto.items() for v in names}


def summary_table(results: StudyResults) -> str:
    """The terminal table: one row per point, Pareto members starred."""
    front = on_front(results)
    header = f"{'variant':<24} {'datapath':<20} {'top1 %':>7} {'uJ/inf':>10} {'cycles/inf':>12} {'w dens':>7} {'a dens':>7}"
    lines = [header, "-" * len(header)]
    for p in results.points:
        star = "*" if (p.datapath, p.variant) in front else " "
        lines.append(
            f"{p.variant[:23]:<23}{star} {p.datapath[:20]:<20} {p.top1:7.2f} "
            f"{p.energy_uj_per_inference:10.3f} {p.cycles:12.0f} {p.weight_density:7.3f} "
            f"{p.act_density:7.3f}"
        )
    lines.append("* on the accuracy-vs-energy Pareto front of its datapath")
    return "\n".join(lines)
