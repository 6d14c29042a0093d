from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from codesign.hw.arch import load_arch
from codesign.hw.capture import capture
from codesign.hw.simulate import CSV_COLUMNS, simulate, summarize, write_layers_csv

HARDWARE_DIR = Path(__file__).resolve().parents[2] / "recipes" / "hardware"
ARCHS = sorted(HARDWARE_DIR.glob("*.toml"))
ROW_KEYS = {
    "name",
    "macs",
    "effectual_macs",
    "weight_bits",
    "act_bits",
    "bops",
    "effectual_bops",
    "weight_density",
    "act_density",
    "cycles",
    "compute_cycles",
    "stall_cycles",
    "energy_uj_per_inference",
    "energy_by_component_uj_per_inference",
    "utilization",
}


def small_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    ).eval()


@pytest.mark.parametrize("path", ARCHS, ids=lambda p: p.stem)
def test_every_recipe_simulates_and_summarizes(path, conv_record, tmp_path):
    arch = load_arch(path)
    costs = simulate([conv_record, conv_record], arch)
    result = summarize(costs, arch.name)
    assert set(result) == {"arch", "total", "layers"}
    assert set(result["total"]) == {
        "samples",
        "energy_uj_per_inference",
        "energy_by_component_uj_per_inference",
        "cycles",
        "compute_cycles",
        "stall_cycles",
        "bops",
        "effectual_bops",
    }
    total = result["total"]
    assert total["samples"] == conv_record.n == 2
    assert total["energy_uj_per_inference"] == pytest.approx(
        sum(total["energy_by_component_uj_per_inference"].values())
    )
    assert total["cycles"] == pytest.approx(total["compute_cycles"] + total["stall_cycles"])
    row = result["layers"][0]
    assert set(row) == ROW_KEYS
    assert row["macs"] == conv_record.dense_macs // 2 and row["cycles"] > 0
    write_layers_csv(costs, tmp_path / "layers.csv")
    rows = list(csv.DictReader((tmp_path / "layers.csv").open()))
    assert len(rows) == 2 and float(rows[0]["cycles"]) == pytest.approx(row["cycles"])
    assert float(rows[0]["energy_uj_per_inference"]) == pytest.approx(
        row["energy_uj_per_inference"]
    )


def test_per_inference_energy_times_samples_is_the_sum_of_layer_costs():
    images = torch.randn(3, 3, 16, 16)
    records = capture(small_network(), lambda m: m(images))
    costs = simulate(records, load_arch(HARDWARE_DIR / "scnn.toml"))
    total = summarize(costs)["total"]
    assert total["samples"] == 3
    # LayerCost energies are totals over the whole capture, in pJ (1 uJ = 1e6 pJ).
    assert total["energy_uj_per_inference"] * 3 == pytest.approx(
        sum(c.energy_pj for c in costs) / 1e6, rel=1e-12
    )
    assert total["cycles"] * 3 == pytest.approx(sum(c.cycles for c in costs), rel=1e-12)
    assert total["stall_cycles"] * 3 == pytest.approx(sum(c.stall_cycles for c in costs))
    for cost, row in zip(costs, summarize(costs)["layers"], strict=True):
        assert row["compute_cycles"] * 3 == pytest.approx(cost.compute_cycles)
        assert row["energy_by_component_uj_per_inference"]["mac"] * 3e6 == pytest.approx(
            cost.energy_pj_by_component["mac"]
        )


@pytest.mark.parametrize("path", ARCHS, ids=lambda p: p.stem)
def test_two_or_four_identical_images_cost_the_same_per_inference_where_work_is_per_image(path):
    """MACs and their energy scale with the images, so per inference they do not depend on
    how many identical images were captured. Weights are fetched once for the whole captured
    batch, so the per-inference total falls as the batch grows: per-inference figures hold at
    a batch of ``samples``."""
    arch = load_arch(path)
    image = torch.randn(1, 3, 16, 16)
    network = small_network()
    by_count = {}
    for count in (2, 4):
        records = capture(network, lambda m, count=count: m(image.repeat(count, 1, 1, 1)))
        by_count[count] = summarize(simulate(records, arch))
    two, four = by_count[2], by_count[4]
    assert (two["total"]["samples"], four["total"]["samples"]) == (2, 4)
    assert two["total"]["energy_by_component_uj_per_inference"]["mac"] == pytest.approx(
        four["total"]["energy_by_component_uj_per_inference"]["mac"], rel=1e-12
    )
    for a, b in zip(two["layers"], four["layers"], strict=True):
        assert (a["macs"], a["effectual_macs"]) == (b["macs"], b["effectual_macs"])
        assert (a["weight_density"], a["act_density"]) == (b["weight_density"], b["act_density"])
    assert four["total"]["energy_uj_per_inference"] < two["total"]["energy_uj_per_inference"]


def test_layers_csv_header_names_units_and_scope(conv_record, tmp_path):
    costs = simulate([conv_record], load_arch(HARDWARE_DIR / "systolic-16x16-ws.toml"))
    write_layers_csv(costs, tmp_path / "layers.csv")
    header = (tmp_path / "layers.csv").read_text().splitlines()[0].split(",")
    components = list(costs[0].energy_pj_by_component)
    assert header == [*CSV_COLUMNS, *(f"energy_{c}_uj_per_inference" for c in components)]
    assert {"cycles", "compute_cycles", "stall_cycles", "energy_uj_per_inference"} <= set(header)
    assert "energy_uj" not in header and "energy_mac_uj" not in header
    row = next(csv.DictReader((tmp_path / "layers.csv").open()))
    parts = sum(float(row[f"energy_{c}_uj_per_inference"]) for c in components)
    assert float(row["energy_uj_per_inference"]) == pytest.approx(parts)
