"""scripts/seed_spread.py (a thin wrapper of codesign.study.seeds): other seeds re-build the
trained variants exactly as a recipe with that seed would, untrained ones are
seed-independent, and dominance is judged per seed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from codesign.cli import main
from codesign.study.seeds import SeedPoint, dominance, spread_rows

from .conftest import digits_recipe_head

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "seed_spread.py"


def load_script():
    spec = importlib.util.spec_from_file_location("seed_spread", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VARIANTS = """[[variants]]
name = "ptq-w8a8"
quant = { weight_bits = 8, act_bits = 8 }
[[variants]]
name = "qat-w4a4"
quant = { weight_bits = 4, act_bits = 4, keep_8bit = ["first", "last"] }
qat = { epochs = 1, lr = 0.001 }
"""


def run_recipe(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"seed{seed}.toml"
    path.write_text(digits_recipe_head("seed-spread-test", ["scnn"], seed) + VARIANTS)
    out = tmp_path / f"out{seed}"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def test_other_seeds_match_recipes_run_with_those_seeds(tmp_path: Path) -> None:
    seed_spread = load_script()
    study = run_recipe(tmp_path, 0)
    reference = json.loads((run_recipe(tmp_path, 1) / "results.json").read_text())
    assert seed_spread.main([str(study), "--seeds", "1", "--quiet"]) == 0
    spread = json.loads((study / "seed_spread.json").read_text())
    assert spread["seeds"] == [0, 1] and spread["rebuilt"] == ["qat-w4a4"]
    rows = {r["variant"]: r for r in spread["variants"]}
    study_points = {
        p["variant"]: p for p in json.loads((study / "results.json").read_text())["points"]
    }
    seed1_points = {p["variant"]: p for p in reference["points"]}
    for name, row in rows.items():
        assert row["top1"][0] == study_points[name]["top1"]
        # A recipe run with seed 1 is the reference computed another way.
        assert row["top1"][1] == pytest.approx(seed1_points[name]["top1"])
        assert row["top1_mean"] == pytest.approx(sum(row["top1"]) / 2)
        assert row["top1_min"] <= row["top1_mean"] <= row["top1_max"]
    assert rows["ptq-w8a8"]["trained"] is False and rows["qat-w4a4"]["trained"] is True
    assert rows["ptq-w8a8"]["top1"][0] == rows["ptq-w8a8"]["top1"][1]
    assert spread["search"] == {}  # a plain `codesign run` study has no search


def test_dominance_is_judged_within_each_seed_and_on_means() -> None:
    def point(top1: float, energy: float, source: str) -> SeedPoint:
        return SeedPoint(top1, energy, source, trained=True)

    by_seed = {
        0: {"u": point(91.0, 10.0, "recipe"), "s": point(91.5, 8.0, "search")},
        1: {"u": point(92.0, 10.0, "recipe"), "s": point(91.0, 8.0, "search")},
    }
    rows = spread_rows(by_seed, "scnn")
    verdict = dominance(by_seed, rows)["s"]
    assert verdict.dominates_per_seed == {"0": ["u"], "1": []}
    assert verdict.dominates_every_recipe_variant_at_seeds == [0]
    assert verdict.dominates_on_means == []  # 91.25 < 91.5
    # A trained recipe variant not re-built at seed 1 is not compared there.
    del by_seed[1]["u"]
    rows = spread_rows(by_seed, "scnn")
    assert rows[0].top1 == (91.0, None) and rows[0].top1_mean == 91.0
    verdict = dominance(by_seed, rows)["s"]
    assert verdict.dominates_per_seed == {"0": ["u"], "1": []}
    assert verdict.dominates_every_recipe_variant_at_seeds == [0]
    assert verdict.dominates_on_means == [] and verdict.unknown_at_other_seeds == ["u"]


def test_a_missing_study_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_spread = load_script()
    assert seed_spread.main([str(tmp_path / "nowhere"), "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "results.json" in err and "codesign run" in err


def test_a_study_from_another_results_schema_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_spread = load_script()
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 1, "points": []}))
    (tmp_path / "recipe.json").write_text("{}")
    assert seed_spread.main([str(tmp_path), "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "schema_version 1" in err and "re-run" in err
