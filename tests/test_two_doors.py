"""The same settings give the same numbers through either door: a standalone command
(`codesign prune` / `codesign qat`) and a recipe variant run the same step handlers."""

from __future__ import annotations

import json
from pathlib import Path

from codesign.cli import main
from codesign.resources import bundled_checkpoint

from .conftest import digits_recipe_head

# One epoch each, with the cubic timing given through flags and recipe keys alike.
PRUNE_FLAGS = [
    "--sparsity", "0.5", "--schedule", "cubic", "--epochs", "1", "--lr", "0.02",
    "--prune-start", "0.1", "--prune-end", "0.5", "--prune-updates", "4",
    "--weight-bits", "8", "--act-bits", "8", "--method", "minmax",
]  # fmt: skip
QAT_FLAGS = [
    "--weight-bits", "4", "--act-bits", "8", "--keep-8bit", "first,last",
    "--method", "mse", "--epochs", "1",
]  # fmt: skip
RECIPE = digits_recipe_head("doors", ["scnn"]) + (
    '[[variants]]\nname = "pruned"\n'
    'sparsity = { sparsity = "0.5", schedule = "cubic", prune_start = 0.1, prune_end = 0.5, '
    "prune_updates = 4 }\n"
    "finetune = { epochs = 1, lr = 0.02 }\n"
    'quant = { weight_bits = 8, act_bits = 8, method = "minmax" }\n'
    '[[variants]]\nname = "qat"\n'
    'quant = { weight_bits = 4, act_bits = 8, keep_8bit = ["first", "last"], method = "mse" }\n'
    "qat = { epochs = 1 }\n"
)


def _command(tmp_path: Path, name: str, args: list[str]) -> dict:
    out = tmp_path / name
    checkpoint = str(bundled_checkpoint("resnet8-digits"))
    common = ["--checkpoint", checkpoint, "--calib-samples", "256", "--out", str(out), "--quiet"]
    assert main([name, *args, *common]) == 0
    return json.loads((out / "result.json").read_text())


def test_prune_and_qat_commands_equal_their_recipe_variants(tmp_path: Path) -> None:
    recipe = tmp_path / "doors.toml"
    recipe.write_text(RECIPE)
    assert main(["run", str(recipe), "--out", str(tmp_path / "study"), "--quiet"]) == 0
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    variants = {v["variant"]: v for v in results["variants"]}

    pruned = _command(tmp_path, "prune", PRUNE_FLAGS)
    assert pruned["quant_top1"] == variants["pruned"]["top1"]
    assert pruned["sparsity"] == variants["pruned"]["weight_sparsity"]
    qat = _command(tmp_path, "qat", QAT_FLAGS)
    assert qat["quant_top1"] == variants["qat"]["top1"]
    # Both doors drew the same calibration images.
    assert qat["subsets"]["calibration"] == pruned["subsets"]["calibration"]
