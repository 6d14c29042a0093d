from __future__ import annotations

import csv
from pathlib import Path

import pytest

from codesign.hw.arch import load_arch
from codesign.hw.simulate import simulate, summarize, write_layers_csv

HARDWARE_DIR = Path(__file__).resolve().parents[2] / "recipes" / "hardware"


@pytest.mark.parametrize("path", sorted(HARDWARE_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_recipe_simulates_and_summarizes(path, conv_record, tmp_path):
    arch = load_arch(path)
    costs = simulate([conv_record, conv_record], arch)
    result = summarize(costs, arch.name)
    assert set(result) == {"arch", "total", "layers"}
    assert set(result["total"]) == {"cycles", "energy_uj", "energy_by_component_uj"}
    assert result["total"]["energy_uj"] == pytest.approx(
        sum(result["total"]["energy_by_component_uj"].values())
    )
    row = result["layers"][0]
    assert set(row) == {
        "name",
        "macs",
        "effectual_macs",
        "weight_density",
        "act_density",
        "cycles",
        "energy_uj",
        "utilization",
    }
    assert row["macs"] == conv_record.dense_macs and row["cycles"] > 0
    write_layers_csv(costs, tmp_path / "layers.csv")
    rows = list(csv.DictReader((tmp_path / "layers.csv").open()))
    assert len(rows) == 2 and float(rows[0]["cycles"]) == pytest.approx(row["cycles"])
