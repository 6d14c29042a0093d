"""Variant results -> the ``results.json`` / ``results.csv`` shapes (pure data, no I/O but the
atomic writers).

With several seeds (see :mod:`codesign.report.seeds`) the points, the variants and their
intervals are the first seed's builds, as with one seed; the Pareto fronts and every dominance
claim (:mod:`codesign.report.claims`) are judged on the seed means, which each point carries
beside its own figures, and ``seed_spread`` gives every variant's top-1 at each seed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codesign.hw.summary import LayerSummary
from codesign.io import check_json_keys, csv_safe, write_json_atomic, write_text_atomic
from codesign.report.claims import Claim, judge_claim
from codesign.report.pareto import dominates, pareto_front
from codesign.report.seeds import Runs, SeedRow, group_runs, mean_energy, seed_row
from codesign.stats import top1_ci95

if TYPE_CHECKING:
    from codesign.pipeline.results import VariantResult
    from codesign.study.search.results import SearchResult

# 3: seeds, seed_spread, dominance claims with paired tests, seed means on every point.
#    Bit operations (bops, effectual_bops) on every point, layer row and total.
RESULTS_SCHEMA = 3
POINT_COLUMNS = (
    "variant",
    "source",
    "datapath",
    "top1",
    "top1_mean",
    "val_top1",
    "energy_uj_per_inference",
    "energy_uj_per_inference_mean",
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
    inference with their breakdowns, bit operations per inference (dense and effectual), measured densities, and the per-layer rows, all of the
    build at the study's first seed; ``top1_mean`` (%) and ``energy_uj_per_inference_mean``
    (uJ): their means over the study's seeds (equal to them with one seed), what fronts and
    claims are judged on. ``source``: "recipe" for a recipe variant, "search" for a verified
    search configuration."""

    variant: str
    source: str
    datapath: str
    top1: float
    top1_ci95: tuple[float, float]
    top1_mean: float
    val_top1: float
    energy_uj_per_inference: float
    energy_uj_per_inference_mean: float
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


def points_of(
    variant: VariantResult,
    source: str = "recipe",
    runs: Runs | None = None,
    seeds: Sequence[int] = (),
) -> list[Point]:
    """One point per datapath of a scored variant; the seed means from ``runs`` (name -> seed
    -> build) over ``seeds`` when given, else the variant's own figures."""
    name = variant.variant
    row = seed_row(name, source, runs[name], seeds) if runs is not None and seeds else None
    return [
        Point(
            variant=name,
            source=source,
            datapath=datapath,
            top1=variant.top1,
            top1_ci95=tuple(top1_ci95(variant.top1, variant.samples)),
            top1_mean=row.top1_mean if row is not None else variant.top1,
            val_top1=variant.val_top1,
            energy_uj_per_inference=cost.energy_uj_per_inference,
            energy_uj_per_inference_mean=(
                mean_energy(name, runs[name], seeds, datapath)
                if runs is not None and seeds
                else cost.energy_uj_per_inference
            ),
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
        for datapath, cost in variant.datapaths.items()
    ]


def judged(point: Point) -> tuple[float, float]:
    """(energy, top-1) of a point as fronts and claims judge it: the seed means."""
    return point.energy_uj_per_inference_mean, point.top1_mean


def _by_datapath(points: Sequence[Point]) -> dict[str, list[Point]]:
    grouped: dict[str, list[Point]] = {}
    for point in points:
        grouped.setdefault(point.datapath, []).append(point)
    return grouped


def fronts(points: Sequence[Point]) -> dict[str, list[str]]:
    """Per datapath, the variants on its accuracy-vs-energy Pareto front (rising energy), on
    the seed means."""
    return {
        name: [group[i].variant for i in pareto_front([judged(p) for p in group])]
        for name, group in _by_datapath(points).items()
    }


def weakly_dominates(a: Point, b: Point) -> bool:
    """The Pareto front's rule on the seed means: ``a`` has at most ``b``'s energy and at least
    its top-1, and is strictly better in one."""
    (ea, ta), (eb, tb) = judged(a), judged(b)
    return ea <= eb and ta >= tb and (ea < eb or ta > tb)


def pareto_claims(
    points: Sequence[Point], pareto: Mapping[str, Sequence[str]], runs: Runs, seeds: Sequence[int]
) -> list[Claim]:
    """For every point off its datapath's front, one claim per front point that dominates it
    (the reason it is off the front), with its paired test."""
    claims = []
    for datapath, group in _by_datapath(points).items():
        front = [p for p in group if p.variant in pareto[datapath]]
        for loser in (p for p in group if p.variant not in pareto[datapath]):
            for winner in front:
                if weakly_dominates(winner, loser):
                    claims.append(judge_claim(winner.variant, loser.variant, runs, seeds, datapath))
    return claims


def search_claims(
    points: Sequence[Point], datapath: str, runs: Runs, seeds: Sequence[int]
) -> list[Claim]:
    """Every verified search configuration against every recipe variant it dominates on the
    search's datapath by the search's rule (strictly less energy, at least the top-1), on the
    seed means, with its paired test."""
    here = [p for p in points if p.datapath == datapath]
    return [
        judge_claim(mine.variant, other.variant, runs, seeds, datapath)
        for mine in here
        if mine.source == "search"
        for other in here
        if other.source == "recipe" and dominates(judged(mine), judged(other))
    ]


@dataclasses.dataclass(frozen=True)
class StudyResults:
    """What ``results.json`` holds: the recipe's name, seeds (``seed``: the first) and data
    spec, every recipe variant (its build at the first seed), the points (variant x datapath,
    search configurations included), the Pareto fronts per datapath, every variant's top-1
    across the seeds, the dominance claims with their paired tests (``pareto``: why each point
    off a front is off it; ``search``: each verified configuration against the recipe
    variants, on the search datapath), and the search if one ran."""

    recipe: str
    seed: int
    seeds: tuple[int, ...]
    data: str
    variants: tuple[VariantResult, ...]
    points: tuple[Point, ...]
    pareto: Mapping[str, list[str]]
    seed_spread: tuple[SeedRow, ...]
    pareto_claims: tuple[Claim, ...]
    search_claims: tuple[Claim, ...]
    search: SearchResult | None

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` object: variants without their per-datapath costs (those are
        in ``points``), timings, cache keys or per-image vectors (those are in each variant's
        ``variant.json``; the tests made with them are here)."""
        return {
            "schema_version": RESULTS_SCHEMA,
            "recipe": self.recipe,
            "seed": self.seed,
            "seeds": list(self.seeds),
            "data": self.data,
            "variants": [v.summary_json() for v in self.variants],
            "points": [p.to_json() for p in self.points],
            "pareto": {name: list(names) for name, names in self.pareto.items()},
            "seed_spread": [row.to_json() for row in self.seed_spread],
            "dominance": {
                "pareto": [c.to_json() for c in self.pareto_claims],
                "search": [c.to_json() for c in self.search_claims],
            },
            "search": self.search.to_json() if self.search is not None else None,
        }


def build_results(
    recipe: Mapping[str, Any],
    variants: Sequence[VariantResult],
    search: SearchResult | None = None,
    search_seeds: Sequence[VariantResult] = (),
) -> StudyResults:
    """The whole study's results from the resolved recipe (its JSON form), the scored recipe
    variants (at every seed the recipe has), the search's verified configurations if any and
    those of them rebuilt at the recipe's other seeds (``search_seeds``)."""
    seeds = tuple(recipe.get("seeds") or (recipe["seed"],))
    searched = [c.result for c in search.verified] if search is not None else []
    runs = group_runs([*variants, *searched, *search_seeds])
    firsts = [v for v in variants if v.seed == seeds[0]]
    sources = [(v, "recipe") for v in firsts] + [(v, "search") for v in searched]
    points = [p for v, source in sources for p in points_of(v, source, runs, seeds)]
    pareto = fronts(points)
    return StudyResults(
        recipe=recipe["name"],
        seed=seeds[0],
        seeds=seeds,
        data=recipe["data"]["source"],
        variants=tuple(firsts),
        points=tuple(points),
        pareto=pareto,
        seed_spread=tuple(seed_row(v.variant, s, runs[v.variant], seeds) for v, s in sources),
        pareto_claims=tuple(pareto_claims(points, pareto, runs, seeds)),
        search_claims=tuple(
            search_claims(points, search.datapath, runs, seeds) if search is not None else ()
        ),
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
    claims = [*results.pareto_claims, *results.search_claims]
    if claims:
        significant = sum(bool(c.significant) for c in claims)
        lines.append(
            f"{len(claims)} dominance claims, {significant} significant at p < 0.05 (paired "
            "tests on the same test images: results.json['dominance'], report.html)"
        )
    if len(results.seeds) > 1:
        lines.append(
            f"top-1 of seed {results.seed}; fronts and claims on the means of seeds "
            f"{', '.join(map(str, results.seeds))} (results.json['seed_spread'])"
        )
    return "\n".join(lines)
