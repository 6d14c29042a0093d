"""Variant results -> the ``results.json`` / ``results.csv`` shapes (pure data, no I/O but the
atomic writers)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codesign.io import write_json_atomic, write_text_atomic
from codesign.report.pareto import pareto_front

RESULTS_SCHEMA = 2
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
    "weight_density",
    "act_density",
    "effectual_mac_fraction",
    "weight_sparsity",
)


def points_of(variant: dict[str, Any], source: str = "recipe") -> list[dict[str, Any]]:
    """One point per datapath of a scored variant (see ``experiment.score_model``)."""
    points = []
    for name, summary in variant["datapaths"].items():
        points.append(
            {
                "variant": variant["variant"],
                "source": source,
                "datapath": name,
                "top1": variant["top1"],
                "val_top1": variant["val_top1"],
                "energy_uj_per_inference": summary["energy_uj_per_inference"],
                "energy_by_component_uj_per_inference": summary[
                    "energy_by_component_uj_per_inference"
                ],
                "cycles": summary["cycles"],
                "compute_cycles": summary["compute_cycles"],
                "stall_cycles": summary["stall_cycles"],
                "weight_density": variant["weight_density"],
                "act_density": variant["act_density"],
                "effectual_mac_fraction": variant["effectual_mac_fraction"],
                "weight_sparsity": variant["weight_sparsity"],
                "layers": summary["layers"],
            }
        )
    return points


def fronts(points: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Per datapath, the variants on its accuracy-vs-energy Pareto front (rising energy)."""
    by_datapath: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        by_datapath.setdefault(point["datapath"], []).append(point)
    return {
        name: [
            group[i]["variant"]
            for i in pareto_front([(p["energy_uj_per_inference"], p["top1"]) for p in group])
        ]
        for name, group in by_datapath.items()
    }


def build_results(
    recipe: dict[str, Any],
    variants: Sequence[dict[str, Any]],
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole ``results.json``: variants (config, accuracy, densities, per-layer widths and
    sparsity), points (variant x datapath with energy per inference in uJ and its breakdown),
    Pareto fronts per datapath, and the search's verified configurations if any."""
    points = [p for v in variants for p in points_of(v)]
    searched = search["verified"] if search else []
    points += [p for v in searched for p in points_of(v, source="search")]
    return {
        "schema_version": RESULTS_SCHEMA,
        "recipe": recipe["name"],
        "seed": recipe["seed"],
        "data": recipe["data"]["source"],
        "variants": [
            {k: v[k] for k in v if k not in ("datapaths", "timing", "key")} for v in variants
        ],
        "points": points,
        "pareto": fronts(points),
        "search": search,
    }


def results_csv(points: Sequence[dict[str, Any]]) -> str:
    """One CSV row per point; energy components as extra ``energy_<name>_uj_per_inference``
    columns."""
    components: list[str] = []
    for point in points:
        by_component = point["energy_by_component_uj_per_inference"]
        components += [c for c in by_component if c not in components]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*POINT_COLUMNS, *(f"energy_{c}_uj_per_inference" for c in components)])
    for point in points:
        writer.writerow(
            [point[c] for c in POINT_COLUMNS]
            + [point["energy_by_component_uj_per_inference"].get(c, 0.0) for c in components]
        )
    return buffer.getvalue()


def write_results(out: Path, results: dict[str, Any]) -> None:
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "results.csv", results_csv(results["points"]))


def summary_table(results: dict[str, Any]) -> str:
    """The terminal table: one row per point, Pareto members starred."""
    front = {(d, v) for d, names in results["pareto"].items() for v in names}
    header = f"{'variant':<24} {'datapath':<20} {'top1 %':>7} {'uJ/inf':>10} {'cycles/inf':>12} {'w dens':>7} {'a dens':>7}"
    lines = [header, "-" * len(header)]
    for p in results["points"]:
        star = "*" if (p["datapath"], p["variant"]) in front else " "
        lines.append(
            f"{p['variant'][:23]:<23}{star} {p['datapath'][:20]:<20} {p['top1']:7.2f} "
            f"{p['energy_uj_per_inference']:10.3f} {p['cycles']:12.0f} {p['weight_density']:7.3f} "
            f"{p['act_density']:7.3f}"
        )
    lines.append("* on the accuracy-vs-energy Pareto front of its datapath")
    return "\n".join(lines)
