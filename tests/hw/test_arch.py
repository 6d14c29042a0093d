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


def test_unknown_key_names_its_toml_path_and_the_valid_keys():
    with pytest.raises(
        HardwareError, match=r"unknown key arch\.compute\.dataflw: valid keys are .*dataflow"
    ):
        arch_from_dict({"name": "x", "kind": "systolic", "compute": {"dataflw": "ws"}})
    with pytest.raises(HardwareError, match="unknown key arch.speed"):
        arch_from_dict({"name": "x", "kind": "systolic", "speed": 1})


def test_bad_values_are_errors():
    with pytest.raises(HardwareError, match="unknown compute.dataflow 'rs'"):
        arch_from_dict({"name": "x", "kind": "dense", "compute": {"dataflow": "rs"}})
    with pytest.raises(HardwareError, match=r"arch\.compute\.rows must be int"):
        arch_from_dict({"name": "x", "kind": "systolic", "compute": {"rows": "32"}})
    with pytest.raises(HardwareError, match="positive"):
        arch_from_dict({"name": "x", "kind": "systolic", "compute": {"rows": 0}})
    with pytest.raises(HardwareError, match="unknown kind"):
        arch_from_dict({"name": "x", "kind": "gpu"})
    with pytest.raises(HardwareError, match="recipe not found"):
        load_arch(HARDWARE_DIR / "nope.toml")
