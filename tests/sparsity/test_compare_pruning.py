"""scripts/compare_pruning.py: reusing `codesign prune` results (no training here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from codesign.config import SparsitySpec

SCRIPT = Path(__file__).parents[2] / "scripts" / "compare_pruning.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_pruning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _result(tmp_path: Path, **fields) -> Path:
    saved = {
        "oneshot_top1": 80.0,
        "pruned_top1": 90.0,
        "pruned_sparsity": 0.7,
        "train_seconds": 1.0,
        "layers": [
            {"name": "conv1", "pattern": "dense"},
            {"name": "layer1.0.conv1", "pattern": "unstructured"},
        ],
        "train": {"epochs": 2, "lr": 0.02, "distill_temperature": 4.0, "distill_weight": 0.7},
        **fields,
    }
    (tmp_path / "result.json").write_text(json.dumps(saved))
    return tmp_path


def test_reused_run_gives_torch_its_fine_tuning_and_timing(compare, tmp_path) -> None:
    budget = compare.BUDGETS["0.7"]
    spec = {**budget.spec.to_dict(), "prune_start": 0.1, "prune_end": 0.5}
    path = _result(tmp_path, spec=spec)
    row, train_spec, timing = compare.load_ours(path, budget)
    assert row["layers"] == ["layer1.0.conv1"] and row["top1"] == 90.0
    assert (train_spec.epochs, train_spec.lr) == (2, 0.02)
    assert (timing.start_fraction, timing.end_fraction) == (0.1, 0.5)


def test_reused_run_with_another_spec_is_refused(compare, tmp_path) -> None:
    other = SparsitySpec("0.7", scope="global", schedule="cubic").to_dict()
    with pytest.raises(SystemExit, match="not made with"):
        compare.load_ours(_result(tmp_path, spec=other), compare.BUDGETS["0.7"])


def test_result_without_spec_accepted_only_for_its_nm_pattern(compare, tmp_path) -> None:
    layers = [{"name": "conv1", "pattern": "dense"}, {"name": "a", "pattern": "2:4"}]
    path = _result(tmp_path, layers=layers)
    assert compare.load_ours(path, compare.BUDGETS["2:4"])[0]["layers"] == ["a"]
    with pytest.raises(SystemExit):
        compare.load_ours(path, compare.BUDGETS["0.5"])


def test_torch_level_of_an_nm_budget_is_its_density_one_shot(compare) -> None:
    level = compare._torch_level_spec(compare.BUDGETS["2:4"])
    assert (float(level.sparsity), level.scope, level.schedule) == (0.5, "global", "oneshot")
