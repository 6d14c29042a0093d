"""A self-contained ``report.html``: figures embedded as data URIs, tables, the resolved
recipe, versions and seed. Nothing is fetched when it opens."""

from __future__ import annotations

import base64
import html
import json
import platform
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from codesign.report.claims import SIGNIFICANCE_LEVEL, Claim
from codesign.report.results import StudyResults, on_front
from codesign.stats import top1_ci95

if TYPE_CHECKING:
    from codesign.pipeline.results import Timing
    from codesign.study.search.results import SearchResult

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
tr.front td { font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow: auto; font-size: 12px; }
"""

# Marks the body once every figure has decoded, so a headless browser can check the report.
IMAGE_CHECK = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
});
"""


def versions() -> dict[str, str]:
    """Versions of Python and the libraries the numbers depend on."""
    import matplotlib
    import numpy
    import torch
    import torchvision

    import codesign

    return {
        "python": platform.python_version(),
        "codesign": codesign.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
    }


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] = ()
) -> str:
    head = "".join(
        f"<th class='l'>{_e(h)}</th>" if i < 2 else f"<th>{_e(h)}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for index, row in enumerate(rows):
        css = f" class='{classes[index]}'" if index < len(classes) and classes[index] else ""
        cells = "".join(
            f"<td class='l'>{_e(c)}</td>" if i < 2 else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _ci(top1: float, samples: int) -> list[float]:
    return top1_ci95(top1, samples)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _top1(top1: float, interval: tuple[float, float] | list[float]) -> str:
    return f"{top1:.2f} [{interval[0]:.1f}, {interval[1]:.1f}]"


def _points_table(results: StudyResults) -> str:
    front = on_front(results)
    several = len(results.seeds) > 1
    beaten_by: dict[tuple[str, str], list[Claim]] = {}
    for claim in results.pareto_claims:
        beaten_by.setdefault((claim.datapath, claim.loser), []).append(claim)
    rows, classes = [], []
    for p in results.points:
        on = (p.datapath, p.variant) in front
        means = [f"{p.top1_mean:.2f}", f"{p.energy_uj_per_inference_mean:.4g}"] if several else []
        rows.append(
            [
                p.variant + (" *" if on else ""),
                p.datapath,
                p.source,
                _top1(p.top1, p.top1_ci95),
                *means,
                f"{p.energy_uj_per_inference:.4g}",
                f"{p.cycles:.4g}",
                f"{p.bops / 1e9:.4g}",
                f"{p.effectual_bops / 1e9:.4g}",
                f"{p.weight_density:.3f}",
                f"{p.act_density:.3f}",
                f"{p.effectual_mac_fraction:.3f}",
                ", ".join(
                    f"{k} {v:.3g}" for k, v in p.energy_by_component_uj_per_inference.items()
                ),
                "; ".join(
                    f"{c.winner} ({c.test_text()})"
                    for c in beaten_by.get((p.datapath, p.variant), [])
                )
                or "-",
            ]
        )
        classes.append("front" if on else "")
    seeds = len(results.seeds)
    means = [f"top-1 % (mean of {seeds} seeds)", "uJ (mean)"] if several else []
    return _table(
        [
            "variant",
            "datapath",
            "source",
            "top-1 % [95 % CI]",
            *means,
            "uJ / inference",
            "cycles / inference",
            "GBOPs / inference",
            "effectual GBOPs",
            "weight density",
            "act density",
            "effectual MACs",
            "energy by component (uJ)",
            "dominated by (paired test)",
        ],
        rows,
        classes,
    )


SIGNIFICANCE_NOTE = (
    "Every dominance claim carries the paired test of its accuracy side on the same test "
    "images: the exact McNemar test on the images where the two disagree (with several seeds, "
    "its generalisation to the per-image seed means, the exact sign-flip test). "
    f"<i>significant</i>: p &lt; {SIGNIFICANCE_LEVEL}. Energy is simulated and carries no "
    "sampling noise, so a claim that is not significant reads: cheaper (or as cheap) at an "
    "accuracy these test images cannot tell apart."
)


def _seeds_section(results: StudyResults) -> str:
    """Top-1 at every seed, mean and spread per variant, and the search's claims on the means
    (nothing with one seed)."""
    if len(results.seeds) < 2:
        return ""
    rows = [
        [
            row.variant,
            row.source,
            *(f"{t:.2f}" for t in row.top1),
            f"{row.top1_mean:.2f}",
            f"{row.top1_min:.2f}",
            f"{row.top1_max:.2f}",
            "-" if row.top1_std is None else f"{row.top1_std:.2f}",
            ", ".join(map(str, row.built_at)),
        ]
        for row in results.seed_spread
    ]
    header = ["variant", "source", *(f"seed {s}" for s in results.seeds)]
    header += ["mean", "min", "max", "std", "built at seeds"]
    parts = [
        "<h2>Across seeds</h2>",
        f"<p>Every variant that trains is built at each of the seeds {list(results.seeds)}; "
        "the others are the same model at every seed and are built once. The Pareto fronts "
        "(bold rows) and every dominance claim are judged on the seed means.</p>",
        _table(header, rows),
    ]
    if results.search_claims:
        winners = list(dict.fromkeys(c.winner for c in results.search_claims))
        parts.append("<h3>Search configurations on the seed means</h3>")
        parts.append(
            _table(
                ["configuration", "dominates (paired test on the seed means)"],
                [
                    [
                        w,
                        "; ".join(
                            f"{c.loser} ({c.test_text()})"
                            for c in results.search_claims
                            if c.winner == w
                        ),
                    ]
                    for w in winners
                ],
            )
        )
    return "".join(parts)


def _search_section(search: SearchResult | None) -> str:
    if search is None:
        return ""
    rows = []
    for item in search.verified:
        layers = ", ".join(
            f"{c.name}: W{c.weight_bits}A{c.act_bits} {c.sparsity}" for c in item.choices
        )
        cost = item.result.on(search.datapath)
        rows.append(
            [
                item.result.variant,
                search.datapath,
                f"{item.predicted_top1:.2f}",
                f"{item.result.val_top1:.2f}",
                _top1(item.result.top1, _ci(item.result.top1, item.result.samples)),
                f"{item.predicted_energy_uj_per_inference:.4g}",
                f"{cost.energy_uj_per_inference:.4g}",
                f"{cost.bops / 1e9:.4g}",
                f"{cost.effectual_bops / 1e9:.4g}",
                "; ".join(f"{c.loser} ({c.test_text()})" for c in item.dominance_tests) or "-",
                layers,
            ]
        )
    front_rows = []
    for entry in search.front:
        counts: dict[str, int] = {}
        for label in entry.choices:
            counts[label] = counts.get(label, 0) + 1
        front_rows.append(
            [
                f"{entry.predicted_top1:.2f}",
                f"{entry.predicted_energy_uj_per_inference:.4g}",
                ", ".join(f"{n} x {label}" for label, n in sorted(counts.items())),
            ]
        )
    front_table = f"<h3>Searched front (predicted, {len(front_rows)} configurations)</h3>" + _table(
        ["predicted validation top-1 %", "predicted uJ", "layers per choice"], front_rows
    )
    return (
        "<h2>Co-design search</h2>"
        f"<p>{_e(search.objective)}. Per-layer sensitivity measured on "
        f"{search.sensitivity_subset.size} validation images (held out of "
        "calibration and training); energy of each per-layer choice simulated on "
        f"{_e(search.datapath)}. Every configuration below was built and evaluated for "
        "real (verified): the predicted and the verified validation top-1 are what the search "
        "compares; the test top-1 is only reported.</p>"
        + _table(
            [
                "configuration",
                "datapath",
                "predicted validation top-1",
                "verified validation top-1",
                "test top-1 [95 % CI]",
                "predicted uJ",
                "verified uJ",
                "GBOPs / inference",
                "effectual GBOPs",
                "dominates (same datapath; paired test, first seed)",
                "per-layer choice",
            ],
            rows,
        )
        + _prediction_line(search)
        + front_table
    )


def _prediction_line(search: SearchResult) -> str:
    """The predictions against the builds: mean absolute error and rank correlation."""
    figures = search.prediction()
    if not figures["configurations"]:
        return ""
    rho = figures["rank_correlation"]
    return (
        f"<p>Predicted against verified validation top-1 over {figures['configurations']} "
        f"configurations: mean absolute error {figures['mean_abs_error_points']:.2f} points, "
        "Spearman rank correlation "
        + ("undefined (fewer than two distinct values)" if rho is None else f"{rho:.2f}")
        + ".</p>"
    )


def render_report(
    results: StudyResults,
    recipe: Mapping[str, Any],
    figures: Sequence[tuple[str, bytes]],
    timings: Mapping[str, Timing] | None = None,
) -> str:
    """The HTML text of the report; ``figures`` are (caption, PNG bytes) pairs, ``timings``
    each variant's seconds on this machine, by name."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>codesign report: {_e(results.recipe)}</title>",
        f"<style>{STYLE}</style><script>{IMAGE_CHECK}</script></head><body>",
        f"<h1>codesign: {_e(results.recipe)}</h1>",
        f"<p>Data <code>{_e(results.data)}</code>, "
        + (
            f"seeds {', '.join(map(str, results.seeds))}. "
            if len(results.seeds) > 1
            else f"seed {results.seed}. "
        )
        + "Energy and "
        "cycles are per inference, simulated on the tensors the network really produced "
        "(captured test images); densities are measured, not assumed. BOPs (bit operations) are "
        "MACs x weight bits x activation bits (a float layer counts 32 x 32); effectual BOPs "
        "count only the MACs whose two operands are both nonzero. "
        "Bold rows (*) lie on their datapath's accuracy-vs-energy Pareto front. Top-1 is "
        "given with its 95 % Wilson interval over the test images.</p>",
        "<h2>Accuracy vs energy</h2>",
    ]
    for caption, png in figures[:1]:
        parts.append(_img(png, caption))
    parts.append(f"<p>{SIGNIFICANCE_NOTE}</p>")
    parts.append(_points_table(results))
    parts.append(_seeds_section(results))
    parts.append(_search_section(results.search))
    parts.append("<h2>Per-layer figures</h2>")
    for caption, png in figures[1:]:
        parts.append(f"<h3>{_e(caption)}</h3>{_img(png, caption)}")
    variant_rows = [
        [
            v.variant,
            json.dumps(v.config),
            _top1(v.top1, _ci(v.top1, v.samples)),
            f"{v.weight_sparsity:.3f}",
        ]
        for v in results.variants
    ]
    parts.append("<h2>Variants</h2>")
    parts.append(
        _table(["variant", "config", "top-1 % [95 % CI]", "weight sparsity"], variant_rows)
    )
    if timings:
        parts.append("<h2>Timings (seconds, this machine)</h2>")
        parts.append(
            _table(
                ["variant", "train", "calibration", "total"],
                [
                    [
                        name,
                        f"{t.train_seconds:.1f}",
                        f"{t.calib_seconds:.1f}",
                        f"{t.total_seconds:.1f}",
                    ]
                    for name, t in timings.items()
                ],
            )
        )
    parts.append("<h2>Resolved recipe</h2>")
    parts.append(f"<pre>{_e(json.dumps(recipe, indent=2))}</pre>")
    parts.append("<h2>Versions</h2>")
    parts.append(_table(["package", "version"], list(versions().items())))
    parts.append("</body></html>")
    return "\n".join(parts)
