from __future__ import annotations

from pathlib import Path

import pytest

from codesign.errors import HardwareError
from codesign.hw.arch import load_arch
from codesign.hw.energy import energy_table_from_dict, horowitz45, load_energy_table
from codesign.hw.records import Action
from codesign.hw.simulate import reprice, simulate, summarize

ENERGY_DIR = Path(__file__).resolve().parents[2] / "recipes" / "energy"
HARDWARE_DIR = Path(__file__).resolve().parents[2] / "recipes" / "hardware"


def test_shipped_default_table_equals_the_code_constants():
    assert load_energy_table(ENERGY_DIR / "horowitz45.toml") == horowitz45()


@pytest.mark.parametrize("path", sorted(ENERGY_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_entry_cites_a_source(path):
    table = load_energy_table(path)
    for field in ("int8_add", "int32_mult", "fp32_mult", "register_16b", "dram_64b"):
        assert getattr(table, field).source.strip()
    assert all(point.source for point in table.sram_64b)


def test_sourced_points_and_width_rules():
    table = horowitz45()
    assert table.mult_pj(8, 8) == pytest.approx(0.2)
    assert table.mult_pj(32, 32) == pytest.approx(3.1)
    assert table.mult_pj(4, 4) == pytest.approx(0.2 / 4)  # ~ a*b
    assert table.mult_pj(4, 8) == pytest.approx(0.1)
    assert table.add_pj(16) == pytest.approx(0.06)  # ~ bits
    assert table.mult_pj(32, 32, is_float=True) == pytest.approx(3.7)
    assert table.add_pj(32, is_float=True) == pytest.approx(0.9)
    assert table.sram_pj_per_bit(32 * 1024) * 64 == pytest.approx(20.0)
    # halfway in log2(size) between 32 KB and 1 MB
    assert table.sram_pj_per_bit(int(2**17.5)) * 64 == pytest.approx(60.0, rel=1e-4)
    assert table.dram_pj_per_bit() * 64 == pytest.approx(1950.0)


def test_actions_price_by_component():
    table = horowitz45()
    actions = [
        Action("mac", "mult", 10, 8, 8),
        Action("dram", "dram", 64.0),
        Action("mac", "add", 10, 32),
    ]
    assert table.price(actions) == pytest.approx({"mac": 10 * 0.2 + 10 * 0.1, "dram": 1950.0})


def test_repricing_needs_no_resimulation(conv_record):
    arch = load_arch(HARDWARE_DIR / "systolic-16x16-ws.toml")
    costs = simulate([conv_record], arch, horowitz45())
    other = load_energy_table(ENERGY_DIR / "eyeriss-relative.toml")
    repriced = reprice(costs, other)
    direct = simulate([conv_record], arch, other)
    assert repriced[0].energy_pj == pytest.approx(direct[0].energy_pj)
    assert repriced[0].cycles == costs[0].cycles
    energy = "energy_uj_per_inference"
    assert summarize(repriced)["total"][energy] != summarize(costs)["total"][energy]


def test_strict_energy_toml_errors():
    good = {"schema_version": 1, "name": "t", "description": "", "entries": {}, "sram_64b": []}
    with pytest.raises(HardwareError, match=r"unknown key energy\.colour"):
        energy_table_from_dict({**good, "colour": 1})
    with pytest.raises(HardwareError, match=r"missing key energy\.entries\.dram_64b"):
        energy_table_from_dict(good)
    entries = {f: {"pj": 1.0, "source": "x"} for f in horowitz45().to_dict()["entries"]}
    entries["int8_add"] = {"pj": 1.0, "source": ""}
    with pytest.raises(HardwareError, match=r"energy\.entries\.int8_add\.source: .*not blank"):
        energy_table_from_dict(
            {**good, "entries": entries, "sram_64b": [{"size_bytes": 8, "pj": 1.0, "source": "y"}]}
        )
