"""Figures of a results dict, rendered to PNG bytes (written atomically and embedded in the
HTML report by the caller). matplotlib with the Agg backend: no display needed."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from codesign.report.pareto import pareto_front

if TYPE_CHECKING:
    from codesign.pipeline.results import VariantResult
    from codesign.report.results import Point

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def pareto_png(points: Sequence[Point], title: str = "") -> bytes:
    """Top-1 (%) against energy per inference (uJ, log axis), seed means (a point's own
    figures with one seed): one marker shape per datapath, each datapath's Pareto front as a
    step line, points from the search outlined in black."""
    figure, axes = plt.subplots(figsize=(8, 5.5))
    datapaths = list(dict.fromkeys(p.datapath for p in points))
    for index, datapath in enumerate(datapaths):
        group = [p for p in points if p.datapath == datapath]
        color = f"C{index % 10}"
        marker = MARKERS[index % len(MARKERS)]
        for source, edge in (("recipe", "none"), ("search", "black")):
            chosen = [p for p in group if p.source == source]
            if chosen:
                axes.scatter(
                    [p.energy_uj_per_inference_mean for p in chosen],
                    [p.top1_mean for p in chosen],
                    marker=marker,
                    color=color,
                    edgecolors=edge,
                    linewidths=1.2,
                    s=48,
                    label=datapath if source == "recipe" else f"{datapath} (search)",
                    zorder=3,
                )
        front = [
            group[i]
            for i in pareto_front([(p.energy_uj_per_inference_mean, p.top1_mean) for p in group])
        ]
        axes.step(
            [p.energy_uj_per_inference_mean for p in front],
            [p.top1_mean for p in front],
            where="post",
            color=color,
            linewidth=1,
            alpha=0.7,
        )
        for p in front:
            axes.annotate(
                p.variant,
                (p.energy_uj_per_inference_mean, p.top1_mean),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    energies = [
        p.energy_uj_per_inference_mean for p in points if p.energy_uj_per_inference_mean > 0
    ]
    if energies and max(energies) / min(energies) > 4:
        axes.set_xscale("log")
    # One collapsed variant (e.g. one-shot pruning) would squash the interesting band; the
    # band shown spans 6 points below the best, and the title counts what falls under it.
    accuracies = [p.top1_mean for p in points]
    floor = max(min(accuracies), max(accuracies) - 6.0) - 0.3
    hidden = sum(a < floor for a in accuracies)
    axes.set_ylim(floor, max(accuracies) + 0.3)
    axes.set_xlabel("energy per inference (uJ)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title(
        (title or "accuracy vs energy (lines: Pareto front per datapath)")
        + (f"; {hidden} points below {floor:.1f} % not shown" if hidden else "")
    )
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)


def layer_energy_png(variants: Sequence[VariantResult], datapath: str) -> bytes:
    """Per-layer energy per inference (uJ) stacked by component, one panel per variant."""
    count = len(variants)
    cols = min(3, count)
    rows = math.ceil(count / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    components: list[str] = []
    for variant in variants:
        for layer in variant.on(datapath).layers:
            components += [
                c for c in layer.energy_by_component_uj_per_inference if c not in components
            ]
    for panel, variant in zip(axes.flat, variants, strict=False):
        layers = variant.on(datapath).layers
        positions = range(len(layers))
        bottom = [0.0] * len(layers)
        for index, component in enumerate(components):
            values = [
                layer.energy_by_component_uj_per_inference.get(component, 0.0) for layer in layers
            ]
            panel.bar(positions, values, bottom=bottom, color=f"C{index % 10}", label=component)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        panel.set_title(f"{variant.variant} ({variant.top1:.2f} %)", fontsize=9)
        panel.set_xticks(list(positions))
        panel.set_xticklabels([layer.name for layer in layers], rotation=90, fontsize=5)
        panel.set_ylabel("uJ / inference", fontsize=8)
    for panel in list(axes.flat)[count:]:
        panel.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=len(components), fontsize=8)
    figure.suptitle(f"per-layer energy by component on {datapath}", y=1.02)
    figure.tight_layout()
    return _png(figure)


def layer_density_png(variants: Sequence[VariantResult]) -> bytes:
    """Measured per-layer weight density and input-activation density, one line per variant."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    first = next(iter(variants[0].datapaths.values())).layers
    names = [layer.name for layer in first]
    for index, variant in enumerate(variants):
        layers = next(iter(variant.datapaths.values())).layers
        color, marker = f"C{index % 10}", MARKERS[index % len(MARKERS)]
        top.plot(
            [r.weight_density for r in layers],
            marker=marker,
            color=color,
            ms=3,
            label=variant.variant,
        )
        bottom.plot([r.act_density for r in layers], marker=marker, color=color, ms=3)
    top.set_ylabel("weight density")
    bottom.set_ylabel("input activation density")
    bottom.set_xticks(range(len(names)))
    bottom.set_xticklabels(names, rotation=90, fontsize=6)
    for axes in (top, bottom):
        axes.set_ylim(0, 1.05)
        axes.grid(True, alpha=0.3)
    top.legend(fontsize=7, ncol=3)
    top.set_title("measured densities on the captured test images")
    figure.tight_layout()
    return _png(figure)
