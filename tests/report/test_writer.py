"""Report files: written atomically, self-contained HTML, CSV in step with the points."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from codesign.pipeline.results import Timing, VariantResult
from codesign.report import build_results, results_csv, write_report
from codesign.report.html import render_report


def _variant(name: str, top1: float, energies: dict[str, float]) -> VariantResult:
    layers = [
        {
            "name": f"l{i}",
            "macs": 100,
            "effectual_macs": 50.0,
            "weight_bits": 8,
            "act_bits": 8,
            "bops": 6400,
            "effectual_bops": 3200.0,
            "weight_density": 0.5,
            "act_density": 0.4,
            "cycles": 10.0,
            "compute_cycles": 8.0,
            "stall_cycles": 2.0,
            "energy_uj_per_inference": e / 2,
            "energy_by_component_uj_per_inference": {"mac": e / 4, "dram": e / 4},
            "utilization": 0.5,
        }
        for i in range(2)
        for e in [energies["a"]]
    ]
    subset = {"size": 1, "per_class": [1], "digest": "d"}
    data = {
        "key": "k",
        "variant": name,
        "config": {"name": name},
        "seed": 0,
        "top1": top1,
        "correct": 1,
        "samples": 1,
        "test_correct": {"samples": 1, "split_sha256": "t", "bits": "gA=="},
        "val_top1": top1,
        "subsets": {"validation": subset, "capture": subset},
        "weight_sparsity": 0.5,
        "captured_samples": 1,
        "weight_density": 0.5,
        "act_density": 0.4,
        "effectual_mac_fraction": 0.2,
        "layers": [],
        "datapaths": {
            d: {
                "datapath": d,
                "energy_uj_per_inference": e,
                "energy_by_component_uj_per_inference": {"mac": e / 2, "dram": e / 2},
                "cycles": 20.0,
                "compute_cycles": 16.0,
                "stall_cycles": 4.0,
                "bops": 12800,
                "effectual_bops": 6400.0,
                "layers": layers,
            }
            for d, e in energies.items()
        },
        "timing": {"train_seconds": 0.0, "calib_seconds": 0.0, "total_seconds": 1.0},
    }
    return VariantResult.from_json(data)


RECIPE = {"name": "toy", "seed": 0, "data": {"source": "digits"}}
VARIANTS = [
    _variant("fp32", 91.0, {"a": 10.0, "b": 5.0}),
    _variant("w8a8", 91.0, {"a": 3.0, "b": 2.0}),
    _variant("w4a4", 89.0, {"a": 2.0, "b": 2.5}),
]


def test_results_have_every_point_and_the_fronts() -> None:
    results = build_results(RECIPE, VARIANTS)
    assert len(results.points) == 6
    assert results.pareto == {"a": ["w4a4", "w8a8"], "b": ["w8a8"]}
    assert "timing" not in json.dumps(results.to_json()["variants"])  # never in results.json
    rows = list(csv.DictReader(io.StringIO(results_csv(results.points))))
    assert [(r["variant"], r["datapath"]) for r in rows][:2] == [("fp32", "a"), ("fp32", "b")]
    assert float(rows[0]["energy_mac_uj_per_inference"]) == pytest.approx(5.0)
    assert float(rows[0]["energy_uj_per_inference"]) == pytest.approx(10.0)
    assert float(rows[0]["compute_cycles"]) + float(rows[0]["stall_cycles"]) == float(
        rows[0]["cycles"]
    )
    assert (int(rows[0]["bops"]), float(rows[0]["effectual_bops"])) == (12800, 6400.0)


def test_write_report_writes_every_file(tmp_path: Path) -> None:
    results = build_results(RECIPE, VARIANTS)
    written = write_report(tmp_path, results, RECIPE, VARIANTS, {"fp32": Timing(0.0, 0.0, 1.0)})
    names = {p.name for p in written}
    assert {"results.json", "results.csv", "recipe.json", "pareto.png", "report.html"} <= names
    assert {"layer_energy_a.png", "layer_energy_b.png", "layer_density.png"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "src='http" not in html and 'src="http' not in html  # nothing fetched
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failure_mid_report_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    import codesign.report.writer as writer

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "render_report", broken)
    with pytest.raises(RuntimeError):
        write_report(tmp_path, build_results(RECIPE, VARIANTS), RECIPE, VARIANTS)
    assert not (tmp_path / "report.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")
    real_replace = os.replace

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path, build_results(RECIPE, VARIANTS), RECIPE, VARIANTS)
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")
def test_report_renders_in_headless_chromium_with_every_figure(tmp_path: Path) -> None:
    results = build_results(RECIPE, VARIANTS)
    write_report(tmp_path, results, RECIPE, VARIANTS)
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'data-images="4/4"' in dom


def test_render_report_escapes_names() -> None:
    evil = [_variant("<script>x</script>", 90.0, {"a": 1.0})]
    text = render_report(build_results(RECIPE, evil), RECIPE, [])
    assert "<script>x</script>" not in text


def test_csv_cells_that_would_run_as_formulas_are_neutralised() -> None:
    from codesign.report.results import points_of

    formula = '=HYPERLINK("http://x","y")'
    points = points_of(_variant(formula, 90.0, {"a": 1.0}))
    row = next(csv.reader(io.StringIO(results_csv(points).splitlines()[1])))
    assert row[0] == "'" + formula  # shown as text, never run by a spreadsheet
