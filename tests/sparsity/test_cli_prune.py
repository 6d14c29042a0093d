"""`codesign prune` end to end on the embedded digits ResNet-8, and its error paths."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from codesign.cli import demo_checkpoint, main

SCRIPT = Path(__file__).parents[2] / "scripts" / "check_nm_checkpoint.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_nm_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prune(out: Path, *extra: str) -> int:
    return main(
        ["prune", "--checkpoint", str(demo_checkpoint()), "--out", str(out), "--quiet", *extra]
    )


def test_prune_2_4_finetune_then_checkpoint_check_and_ptq(tmp_path) -> None:
    out = tmp_path / "nm"
    assert _prune(out, "--sparsity", "2:4", "--epochs", "1") == 0
    result = json.loads((out / "result.json").read_text())
    assert set(result) >= {
        "spec",
        "fp32_top1",
        "oneshot_top1",
        "pruned_top1",
        "sparsity",
        "pruned_sparsity",
        "nm_compliant",
        "layers",
        "train_seconds",
        "train",
    }
    assert result["nm_compliant"] is True
    assert result["pruned_sparsity"] == pytest.approx(0.5)
    assert result["train"]["epochs"] == 1 and result["train_seconds"] > 0
    checker = _checker()
    ok, rows = checker.check(out / "model.pt", 2, 4)
    assert ok and any("ok" in row for row in rows)
    # PTQ of the pruned checkpoint (re-loaded with its recipe) keeps every group at <= 2.
    args = ["--weight-bits", "8", "--act-bits", "8", "--out", str(tmp_path / "q")]
    assert main(["ptq", "--checkpoint", str(out / "model.pt"), *args]) == 0
    quant = json.loads((tmp_path / "q" / "result.json").read_text())
    assert quant["fp32_top1"] == pytest.approx(result["pruned_top1"])
    assert checker.check(tmp_path / "q" / "model.pt", 2, 4)[0]


def test_group_nonzeros_reference_layout() -> None:
    import torch

    weight = torch.zeros(1, 8, 1, 2)
    weight[0, 0:3, 0, 0] = 1.0  # 3 nonzeros in channels 0..2 at (r, s) = (0, 0)
    weight[0, 4, 0, 1] = 1.0
    counts = _checker().group_nonzeros(weight, 4)
    assert sorted(counts.tolist()) == [0, 0, 1, 3]


def test_epochs_zero_is_one_shot(tmp_path) -> None:
    out = tmp_path / "u"
    assert _prune(out, "--sparsity", "0.5", "--epochs", "0") == 0
    result = json.loads((out / "result.json").read_text())
    assert result["oneshot_top1"] == result["pruned_top1"]
    assert result["train_seconds"] == 0.0 and "train" not in result


def test_permute_reports_kept_magnitude_and_keeps_the_one_shot_function(tmp_path) -> None:
    plain, permuted = tmp_path / "plain", tmp_path / "permuted"
    assert _prune(plain, "--sparsity", "2:4", "--epochs", "0") == 0
    assert _prune(permuted, "--sparsity", "2:4", "--epochs", "0", "--permute") == 0
    before = json.loads((plain / "result.json").read_text())
    result = json.loads((permuted / "result.json").read_text())
    assert "permutation" not in before and result["spec"]["permute"] is True
    summary = result["permutation"]
    assert summary["layers"] and summary["kept_after"] >= summary["kept_before"] > 0
    assert result["nm_compliant"] is True and result["fp32_top1"] == before["fp32_top1"]
    assert _checker().check(permuted / "model.pt", 2, 4)[0]


def test_sparsegpt_beats_magnitude_one_shot_on_digits(tmp_path) -> None:
    plain, repaired = tmp_path / "plain", tmp_path / "sparsegpt"
    assert _prune(plain, "--sparsity", "2:4", "--epochs", "0") == 0
    args = ("--sparsity", "2:4", "--epochs", "0", "--prune-method", "sparsegpt")
    assert _prune(repaired, *args, "--calib-samples", "256") == 0
    magnitude = json.loads((plain / "result.json").read_text())
    result = json.loads((repaired / "result.json").read_text())
    errors = result["sparsegpt"]
    assert set(errors) == {row["name"] for row in result["layers"] if row["pattern"] == "2:4"}
    assert all(e["sparsegpt_error"] < e["magnitude_error"] for e in errors.values())
    assert result["oneshot_top1"] >= magnitude["oneshot_top1"]
    assert result["nm_compliant"] is True and result["pruned_sparsity"] == pytest.approx(0.5)
    assert _checker().check(repaired / "model.pt", 2, 4)[0]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--sparsity", "3:2"], "3:2"),
        (["--sparsity", "0.5", "--permute"], "prunes no layer N:M"),
        (["--sparsity", "0.5", "--scope", "global", "--prune-method", "sparsegpt"], "scope"),
        (["--sparsity", "0:4"], "0:4"),
        (["--sparsity", "1.0"], "1"),
        (["--sparsity", "0.7", "--schedule", "cubic", "--epochs", "0"], "--epochs"),
        (["--sparsity", "0.7", "--epochs", "-1"], "epochs: expected an integer >= 0"),
        (
            [
                "--sparsity",
                "0.7",
                "--schedule",
                "cubic",
                "--prune-start",
                "0.8",
                "--prune-end",
                "0.5",
            ],
            "prune_start must come before prune_end",
        ),
    ],
)
def test_bad_input_exits_2_one_line_nothing_written(tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "bad"
    assert _prune(out, *extra) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists() or not any(out.iterdir())
