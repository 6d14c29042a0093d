"""``seeds = [...]`` in a recipe: `codesign run` and `codesign search` build every variant that
trains (and every verified configuration that trains) at each seed and the rest once, exactly
as a recipe with that one seed would, and the report gives the mean and spread."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

import codesign.study.variants as variants
from codesign.cli import main

from ..conftest import digits_recipe_head

VARIANTS = """[[variants]]
name = "ptq-w8a8"
quant = { weight_bits = 8, act_bits = 8 }
[[variants]]
name = "qat-w4a4"
quant = { weight_bits = 4, act_bits = 4, keep_8bit = ["first", "last"] }
qat = { epochs = 1, lr = 0.001 }
"""


def _recipe(directory: Path, name: str, seeds: str, body: str = VARIANTS) -> Path:
    head = digits_recipe_head(name, ["scnn"]).replace("seed = 0\n", seeds + "\n")
    path = directory / f"{name}-{seeds.split()[0]}.toml"
    path.write_text(head + body)
    return path


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    built: list[tuple[int, str]] = []
    real = variants.build_variant

    def counting(study, variant):
        built.append((study.recipe.seed, variant.name))
        return real(study, variant)

    monkeypatch.setattr(variants, "build_variant", counting)
    return built


def test_seeds_build_the_trained_variant_at_each_seed_and_report_the_spread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _counting(monkeypatch)
    recipe = _recipe(tmp_path, "seeds-test", "seeds = [0, 1]")
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert built == [(0, "ptq-w8a8"), (0, "qat-w4a4"), (1, "qat-w4a4")]
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1] and results["seed"] == 0
    rows = {row["variant"]: row for row in results["seed_spread"]}
    qat, ptq = rows["qat-w4a4"], rows["ptq-w8a8"]
    assert qat["built_at"] == [0, 1] and ptq["built_at"] == [0]
    assert qat["top1_mean"] == pytest.approx(statistics.fmean(qat["top1"]))
    assert qat["top1_min"] == min(qat["top1"]) and qat["top1_max"] == max(qat["top1"])
    assert qat["top1_std"] == pytest.approx(statistics.stdev(qat["top1"]))
    assert ptq["top1"][0] == ptq["top1"][1] and ptq["top1_std"] == 0.0
    points = {p["variant"]: p for p in results["points"]}
    assert points["qat-w4a4"]["top1"] == qat["top1"][0]  # the first seed's build
    assert points["qat-w4a4"]["top1_mean"] == qat["top1_mean"]
    html = (out / "report.html").read_text()
    assert "Across seeds" in html and f"{qat['top1_mean']:.2f}" in html

    # A recipe with the one seed 1 is the reference computed another way: the same cache key
    # (the same directory name) and the same top-1 as the seeds run's seed-1 build.
    single = _recipe(tmp_path, "seeds-test", "seed = 1")
    reference = tmp_path / "seed1"
    assert main(["run", str(single), "--out", str(reference), "--quiet"]) == 0
    seed1 = json.loads((reference / "results.json").read_text())
    assert {p["variant"]: p["top1"] for p in seed1["points"]} == {
        "ptq-w8a8": ptq["top1"][1],
        "qat-w4a4": qat["top1"][1],
    }
    manifest = json.loads((out / "study.json").read_text())["variants"]
    assert [(v["name"], v["seed"]) for v in manifest] == [
        ("ptq-w8a8", 0),
        ("qat-w4a4", 0),
        ("qat-w4a4", 1),
    ]
    (seed1_qat,) = reference.glob("variants/qat-w4a4-*")
    assert seed1_qat.name == manifest[2]["directory"]
    stored = json.loads((seed1_qat / "variant.json").read_text())
    assert stored["seed"] == 1 and stored["test_correct"]["samples"] == stored["samples"]

    # Resumed and re-reported: nothing built, the same bytes.
    first = (out / "results.json").read_bytes()
    built.clear()
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert built == [] and (out / "results.json").read_bytes() == first
    assert main(["report", str(out)]) == 0
    assert (out / "results.json").read_bytes() == first


SEARCH = """[[variants]]
name = "ptq-w8a8"
quant = { weight_bits = 8, act_bits = 8 }
[search]
datapath = "scnn"
weight_bits = [4, 8]
act_bits = [8]
sparsity = ["dense"]
sensitivity_samples = 64
verify = 1
qat = { epochs = 1, lr = 0.001 }
"""


def test_search_rebuilds_its_trained_configurations_at_every_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _counting(monkeypatch)
    recipe = _recipe(tmp_path, "seeds-search", "seeds = [0, 1]", SEARCH)
    out = tmp_path / "out"
    args = ["search", str(recipe), "--accuracy-floor", "90", "--out", str(out), "--quiet"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    (verified,) = results["search"]["verified"]
    name = verified["variant"]
    # The search's uniform models (its tables) at the first seed only.
    uniform = [b for b in built if b[1].startswith(("search-reference", "search-uniform"))]
    assert sorted(uniform) == [(0, "search-reference-w8a8"), (0, "search-uniform-W4A8")]
    # The recipe's PTQ variant once; the QAT-trained configuration at both seeds.
    assert sorted(b for b in built if b not in uniform) == sorted(
        [(0, "ptq-w8a8"), (0, name), (1, name)]
    )
    rows = {row["variant"]: row for row in results["seed_spread"]}
    assert rows[name]["source"] == "search" and rows[name]["built_at"] == [0, 1]
    # Every dominance the search states carries its paired test, at the first seed...
    assert [t["loser"] for t in verified["dominance_tests"]] == verified["dominates"]
    assert all(0.0 <= t["p_value"] <= 1.0 and t["seeds"] == 1 for t in verified["dominance_tests"])
    # ... and on the seed means, in results.json["dominance"]["search"].
    for claim in results["dominance"]["search"]:
        assert claim["winner"] == name and claim["seeds"] == 2
        assert claim["significant"] == (claim["p_value"] < 0.05)
    assert "timing" not in verified and "test_correct" not in verified
