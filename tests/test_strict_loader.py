"""The one strict loader (codesign.strict) behind recipes, hardware and energy files.

Every bad value is one ConfigError / HardwareError line that names its TOML path, and every
shipped file loads, re-serialises and loads again to the same spec.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from codesign.config import QuantSpec, TrainSpec
from codesign.errors import ConfigError, HardwareError
from codesign.hw.arch import ComputeSpec, arch_from_dict, load_arch
from codesign.hw.energy import energy_table_from_dict, load_energy_table
from codesign.recipe import SearchSpec, load_recipe, recipe_from_dict
from codesign.resources import RECIPES_PACKAGE, bundled_dir
from codesign.strict import load_toml

RECIPES_DIR = bundled_dir(RECIPES_PACKAGE)
HORO = (RECIPES_DIR / "energy" / "horowitz45.toml").read_text()
V = "[[variants]]\nname = 'a'\n"
R = "schema_version = 1\n"  # recipe head: top-level keys follow it, then tables
ARCH = 'schema_version = 1\nname = "x"\nkind = "systolic"\n'


def _energy(old: str, new: str) -> str:
    assert old in HORO, old
    return HORO.replace(old, new, 1)


RECIPE_CASES = [
    # wrong types (a bool is not an int, a float is not an int, a string is not an array)
    (
        R + "seed = 'abc'\n" + V,
        r"r\.toml: seed: expected an integer from 0 to 2\*\*64 - 1, got 'abc'",
    ),
    (
        R + "seed = true\n" + V,
        r"r\.toml: seed: expected an integer from 0 to 2\*\*64 - 1, got true",
    ),
    (
        R + "seed = 18446744073709551616\n" + V,
        r"r\.toml: seed: .* 2\*\*64 - 1, got 18446744073709551616",
    ),
    (R + "[data]\ncalib_samples = 1.5\n" + V, r"r\.toml: data\.calib_samples: .*>= 1, got 1\.5"),
    (R + "[data]\ndownload = 'yes'\n" + V, r"r\.toml: data\.download: expected true or false"),
    (
        R + V + "[[variants]]\nname = 'b'\n[[variants]]\nname = 'c'\n"
        "sparsity = { sparsity = '2:4' }\nfinetune = { epochs = 1.5 }\n",
        r"r\.toml: variants\[2\]\.finetune\.epochs: expected an integer >= 0, got 1\.5",
    ),
    (
        R + "[hardware]\narchs = 'scnn'\n" + V,
        r"r\.toml: hardware\.archs: expected an array of strings .*got 'scnn'",
    ),
    (R + "[hardware]\narchs = []\n" + V, r"hardware\.archs: .*\(at least one\), got \[\]"),
    (R + V + "quant = { weight_bits = 4.0 }\n", r"quant\.weight_bits: .*from 2 to 8, got 4\.0"),
    (R + V + "quant = { keep_8bit = 'first' }\n", r"quant\.keep_8bit: expected an array of str"),
    (R + V + "quant = { percentile = 20 }\n", r"quant\.percentile: .*in \(50, 100\], got 20"),
    (R + V + "sparsity = '2:4'\n", r"r\.toml: variants\[0\]\.sparsity: expected a table"),
    (R + V + "sparsity = { scope = 'net' }\n", r"sparsity\.scope: expected one of 'layer'.*'net'"),
    (R + V + "sparsity = { permute = 1 }\n", r"sparsity\.permute: expected true or false, got 1"),
    (R + "variants = 'x'\n", r"r\.toml: variants: expected an array of tables, got 'x'"),
    (R + "[[variants]]\nname = 3\n", r"r\.toml: variants\[0\]\.name: expected a string"),
    (R + "[model]\nnum_classes = 0\n" + V, r"r\.toml: model\.num_classes: .*>= 1, got 0"),
    # NaN / inf / out of range where a finite positive number is needed
    (R + V + "quant = {}\nqat = { lr = nan }\n", r"variants\[0\]\.qat\.lr: .*finite number > 0"),
    (R + "[train]\nlr = -0.1\n", r"r\.toml: train\.lr: expected a finite number > 0, got -0\.1"),
    (
        R + V + "[search]\nfinetune = { distill_temperature = inf }\n",
        r"r\.toml: search\.finetune\.distill_temperature: .*>= 0, got inf",
    ),
    (R + V + "sparsity = {}\nfinetune = { momentum = 1.5 }\n", r"momentum: .*in \(0, 1\)"),
    (R + V + "[search]\nweight_bits = [4, 3]\n", r"search\.weight_bits\[1\]: .*4, 8, got 3"),
    (R + V + "[search]\nact_bits = ['4']\n", r"search\.act_bits\[0\]: .*4, 8, got '4'"),
    (R + V + "[search]\nquant_method = 'fast'\n", r"search\.quant_method: .*mse.*got 'fast'"),
    # unknown keys at every depth list the valid ones
    (R + "colour = 1\n" + V, r"unknown key r\.toml: colour: valid keys are .*variants"),
    (R + "[data]\nsorce = 'x'\n" + V, r"unknown key r\.toml: data\.sorce: valid keys .*source"),
    (
        R + V + "quant = { weight_bit = 4 }\n",
        r"unknown key r\.toml: variants\[0\]\.quant\.weight_bit: valid keys .*weight_bits",
    ),
    (
        R + V + "quant = { overrides = [{ pattern = 'x', wbits = 4 }] }\n",
        r"unknown key r\.toml: variants\[0\]\.quant\.overrides\[0\]\.wbits: valid .*weight_bits",
    ),
    (R + V + "[search]\nqat = { epoch = 2 }\n", r"unknown key r\.toml: search\.qat\.epoch: valid"),
    (R + "[[variants]]\nquant = {}\n", r"missing key r\.toml: variants\[0\]\.name"),
    # schema_version says what to write
    (V, r"r\.toml: no schema_version: write `schema_version = 1`"),
    ("schema_version = '1'\n" + V, r"r\.toml: schema_version = '1', .*write `schema_version = 1`"),
]

HARDWARE_CASES = [
    ('name = "x"\nkind = "systolic"\n', r"x\.toml: no schema_version: write `schema_version = 1`"),
    (ARCH.replace("= 1", "= 2"), r"x\.toml: schema_version = 2, .*write `schema_version = 1`"),
    (ARCH + "clock_mhz = nan\n", r"x\.toml: clock_mhz: expected a finite number > 0, got nan"),
    (ARCH + "[compute]\nrows = 16.0\n", r"x\.toml: compute\.rows: .*integer >= 1, got 16\.0"),
    (ARCH + "[compute]\nzero_gating = 'no'\n", r"compute\.zero_gating: expected true or false"),
    (ARCH + "[compute]\ndataflow = 'rs'\n", r"x\.toml: compute\.dataflow: .*'ws'.*got 'rs'"),
    (ARCH + "[memory]\nspad_bytes = -1\n", r"memory\.spad_bytes: .*integer >= 0, got -1"),
    (ARCH + "compute = 'fast'\n", r"x\.toml: compute: expected a table, got 'fast'"),
    (ARCH.replace("systolic", "gpu"), r"x\.toml: kind: expected one of 'systolic'.*'gpu'"),
    (ARCH + "speed = 1\n", r"unknown key x\.toml: speed: valid keys are .*clock_mhz"),
    (ARCH + "[scnn]\nkcc = 1\n", r"unknown key x\.toml: scnn\.kcc: valid keys are .*kc"),
    ('schema_version = 1\nkind = "dense"\n', r"missing key x\.toml: name"),
]

ENERGY_CASES = [
    (_energy("schema_version = 1\n", ""), r"e\.toml: no schema_version: write `schema_"),
    (_energy("pj = 3.7,", "pj = nan,"), r"e\.toml: entries\.fp32_mult\.pj: .*>= 0, got nan"),
    (_energy("pj = 0.2,", "pj = '0.2',"), r"entries\.int8_mult\.pj: .*number >= 0, got '0\.2'"),
    (_energy("pj = 0.03,", "pj = 0.03, colour = 1,"), r"unknown key e\.toml: entries\.int8_add\."),
    (_energy("size_bytes = 32768", "size_bytes = 32768\ncolour = 1"), r"sram_64b\[1\]\.colour"),
    (_energy("size_bytes = 8192", "size_bytes = '8 KB'"), r"sram_64b\[0\]\.size_bytes: .*'8 KB'"),
    (_energy("size_bytes = 8192", "size_bytes = 0"), r"sram_64b\[0\]\.size_bytes: .*>= 1, got 0"),
    ("colour = 1\n" + HORO, r"unknown key e\.toml: colour: valid keys are .*entries"),
    (
        re.sub(r'(int8_add = \{ pj = 0\.03, source = )"[^"]*"', r'\1" "', HORO),
        r"e\.toml: entries\.int8_add\.source: expected a string \(not blank\)",
    ),
]

CASES = [
    pytest.param(load, error, name, text, message, id=re.sub(r"\\", "", message)[:60])
    for load, error, name, cases in [
        (load_recipe, ConfigError, "r.toml", RECIPE_CASES),
        (load_arch, HardwareError, "x.toml", HARDWARE_CASES),
        (load_energy_table, HardwareError, "e.toml", ENERGY_CASES),
    ]
    for text, message in cases
]


@pytest.mark.parametrize(("load", "error", "name", "text", "message"), CASES)
def test_a_bad_value_is_one_line_naming_its_toml_path(
    tmp_path: Path, load: Callable, error: type, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(error, match=message) as caught:
        load(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("load", "error"),
    [(load_recipe, ConfigError), (load_arch, HardwareError), (load_energy_table, HardwareError)],
)
def test_unreadable_files_are_one_line_naming_the_file(
    tmp_path: Path, load: Callable, error: type
) -> None:
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(error, match=r"latin1\.toml is not UTF-8 text.*save it as UTF-8"):
        load(latin1)
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(error, match=r"broken\.toml is not valid TOML: .*line 1") as caught:
        load(broken)
    assert "\n" not in str(caught.value)


def _within(given: Any, full: Any, where: str = "") -> None:
    """Every key and value a file gives is in the re-serialised dict, unchanged."""
    if isinstance(given, dict):
        for key, value in given.items():
            assert key in full, f"{where}.{key} dropped"
            _within(value, full[key], f"{where}.{key}")
    elif isinstance(given, list):
        assert len(given) == len(full), where
        for i, (a, b) in enumerate(zip(given, full, strict=True)):
            _within(a, b, f"{where}[{i}]")
    else:  # an integer in a float field may become a float, nothing else changes
        same_type = type(given) is type(full) or (type(full) is float and type(given) is int)
        assert given == full and same_type, f"{where}: {given!r} became {full!r}"


SHIPPED = [
    pytest.param(path, load, rebuild, id=f"{path.parent.name}/{path.stem}")
    for pattern, load, rebuild in [
        ("*.toml", load_recipe, recipe_from_dict),
        ("hardware/*.toml", load_arch, arch_from_dict),
        ("energy/*.toml", load_energy_table, energy_table_from_dict),
    ]
    for path in sorted(RECIPES_DIR.glob(pattern))
]


@pytest.mark.parametrize(("path", "load", "rebuild"), SHIPPED)
def test_every_shipped_file_round_trips(path: Path, load: Callable, rebuild: Callable) -> None:
    spec = load(path)
    data = spec.to_dict()
    assert rebuild(json.loads(json.dumps(data))) == spec
    raw = load_toml(path)
    if load is load_recipe:
        raw.setdefault("name", path.name)
    _within(raw, data)


def test_specs_built_in_code_are_checked_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"TrainSpec\.lr: expected a finite number > 0, got nan"):
        TrainSpec(lr=math.nan)
    with pytest.raises(ConfigError, match=r"SearchSpec\.verify: expected an integer >= 1, got 0"):
        dataclasses.replace(SearchSpec(), verify=0)
    with pytest.raises(HardwareError, match=r"ComputeSpec\.rows: .*>= 1, got 0"):
        ComputeSpec(rows=0)
    assert QuantSpec(keep_8bit=["first"]).keep_8bit == ("first",)  # type: ignore[arg-type]
    assert type(TrainSpec(lr=1).lr) is float


def test_an_int_in_a_float_field_loads_as_a_float(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(R + "[model]\ncheckpoint = 'c.pt'\n" + V + "quant = {}\nqat = { lr = 1 }\n")
    qat = load_recipe(path).variants[0].qat
    assert qat is not None and qat.lr == 1.0 and type(qat.lr) is float
