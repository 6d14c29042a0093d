"""``export = true`` in a recipe variant: ONNX beside the built model, checked, not in the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codesign.cli import main
from codesign.errors import ConfigError
from codesign.recipe import recipe_from_dict
from codesign.study.export import EXPORT_FILE

from ..conftest import digits_recipe_head

VARIANT = """[[variants]]
name = "w8a8"
quant = {{ weight_bits = 8, act_bits = 8, method = "minmax" }}{export}
"""


def _run(tmp_path: Path, export: str) -> tuple[int, Path]:
    recipe = tmp_path / "export.toml"
    recipe.write_text(digits_recipe_head("export-test", ["scnn"]) + VARIANT.format(export=export))
    out = tmp_path / "out"
    return main(["run", str(recipe), "--out", str(out), "--quiet"]), out


def test_exported_variant_has_its_checked_onnx_and_keeps_its_key(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "")
    assert code == 0
    (plain,) = out.glob("variants/w8a8-*")
    assert not (plain / "model.onnx").exists()
    built = json.loads((plain / "variant.json").read_text())
    code, out = _run(tmp_path, "\nexport = true")
    assert code == 0
    (exported,) = out.glob("variants/w8a8-*")
    assert exported == plain  # same cache key: the build is reused, then exported
    reused = json.loads((exported / "variant.json").read_text())
    assert reused.pop("config") == {**built.pop("config"), "export": True}
    assert reused == built  # not rebuilt: the same numbers and timings
    result = json.loads((exported / EXPORT_FILE).read_text())
    assert (exported / result["onnx"]).is_file()
    assert result["onnx_top1"] == result["torch_top1"] and result["agreement"] >= 0.995
    written = (exported / "model.onnx").stat().st_mtime_ns
    assert _run(tmp_path, "\nexport = true")[0] == 0  # a second run reuses the export
    assert (exported / "model.onnx").stat().st_mtime_ns == written


def test_export_of_a_float_variant_is_a_config_error() -> None:
    data = {"schema_version": 1, "variants": [{"name": "fp32", "export": True}]}
    with pytest.raises(ConfigError, match="export = true needs a \\[quant\\] table"):
        recipe_from_dict(data, "r")
