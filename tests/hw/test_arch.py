from __future__ import annotations

from pathlib import Path

import pytest

from codesign.errors import HardwareError
from codesign.hw.arch import arch_from_dict, load_arch

HARDWARE_DIR = Path(__file__).resolve().parents[2] / "recipes" / "hardware"
REQUIRED = [
    *(f"systolic-{n}x{n}-{d}" for n in (32, 16) for d in ("ws", "os", "is")),
    "scnn",
    "dcnn",
    "dcnn-opt",
    "sparse-tc-2of4",
    "tc",
]


def test_required_recipes_exist_and_load():
    names = {p.stem for p in HARDWARE_DIR.glob("*.toml")}
    assert set(REQUIRED) <= names
    dataflows = {
        load_arch(p).compute.dataflow
        for p in HARDWARE_DIR.glob("*.toml")
        if load_arch(p).kind == "dense"
    }
    assert {"os_lws", "ws_los"} <= dataflows
    for path in HARDWARE_DIR.glob("*.toml"):
        assert load_arch(path).name == path.stem


def _arch(**fields):
    return {"schema_version": 1, "name": "x", "kind": "systolic", **fields}


def test_unknown_key_names_its_toml_path_and_the_valid_keys():
    with pytest.raises(
        HardwareError, match=r"unknown key arch\.compute\.dataflw: valid keys are .*dataflow"
    ):
        arch_from_dict(_arch(compute={"dataflw": "ws"}))
    with pytest.raises(HardwareError, match="unknown key arch.speed"):
        arch_from_dict(_arch(speed=1))


def test_bad_values_are_errors():
    with pytest.raises(HardwareError, match=r"arch\.compute\.dataflow: expected one of .*'rs'"):
        arch_from_dict(_arch(kind="dense", compute={"dataflow": "rs"}))
    with pytest.raises(HardwareError, match=r"arch\.compute\.rows: expected an integer"):
        arch_from_dict(_arch(compute={"rows": "32"}))
    with pytest.raises(
        HardwareError, match=r"arch\.compute\.rows: expected an integer >= 1, got 0"
    ):
        arch_from_dict(_arch(compute={"rows": 0}))
    with pytest.raises(HardwareError, match=r"arch\.kind: expected one of .*'gpu'"):
        arch_from_dict(_arch(kind="gpu"))
    with pytest.raises(HardwareError, match="recipe not found"):
        load_arch(HARDWARE_DIR / "nope.toml")
