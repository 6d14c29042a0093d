import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codesign.cli import demo_checkpoint, main

from .conftest import CIFAR_SUBSET, RESNET20_CHECKPOINT, needs_shared


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "codesign", *args], capture_output=True, text=True)


PTQ_DIGITS = ["ptq", "--checkpoint", "{ckpt}", "--weight-bits", "4", "--act-bits", "4"]


@pytest.mark.parametrize(
    "budget,message",
    [
        ("0", "expected a number > 0"),
        ("-1", "expected a number > 0"),
        ("nan", "expected a finite number"),
        ("inf", "expected a finite number"),
        ("abc", "expected a number"),
    ],
)
def test_bad_calib_budget_exits_2_with_one_line_before_work(tmp_path, budget, message):
    out = tmp_path / "out"
    argv = [a.format(ckpt=demo_checkpoint()) for a in PTQ_DIGITS]
    result = run_cli(*argv, "--calib-budget-s", budget, "--out", str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert "--calib-budget-s" in lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--method", "gptq", "--calib-budget-s", "5"], "method 'gptq' runs alone"),
    ],
)
def test_calib_budget_only_with_auto(tmp_path, extra, message):
    out = tmp_path / "out"
    argv = [a.format(ckpt=demo_checkpoint()) for a in PTQ_DIGITS]
    result = run_cli(*argv, *extra, "--out", str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists() or not any(out.iterdir())
    qat = ["qat" if a == "ptq" else a for a in argv]
    result = run_cli(*qat, "--calib-budget-s", "5", "--out", str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "QAT" in lines[0], result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["eval", "--checkpoint", "missing.th", "--out", "{out}"], "checkpoint not found"),
        (
            ["eval", "--checkpoint", "{ckpt}", "--model", "resnet21", "--out", "{out}"],
            "did you mean",
        ),
        (
            [
                "ptq",
                "--checkpoint",
                "{ckpt}",
                "--weight-bits",
                "9",
                "--act-bits",
                "8",
                "--out",
                "{out}",
            ],
            "2 to 8",
        ),
        (
            [
                "ptq",
                "--checkpoint",
                "{ckpt}",
                "--weight-bits",
                "4",
                "--act-bits",
                "4",
                "--calib-samples",
                "0",
                "--out",
                "{out}",
            ],
            "positive integer",
        ),
        (
            [
                "eval",
                "--checkpoint",
                "{ckpt}",
                "--data",
                "imagefolder:/nonexistent",
                "--out",
                "{out}",
            ],
            "not found",
        ),
        (
            [
                "ptq",
                "--checkpoint",
                "{ckpt}",
                "--weight-bits",
                "4",
                "--act-bits",
                "4",
                "--keep-8bit",
                "layer9.*",
                "--out",
                "{out}",
            ],
            "matches no layer",
        ),
        (["eval", "--checkpoint", "{ckpt}", "--data", "npz:{nan}", "--out", "{out}"], "NaN"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, args, message):
    import numpy as np

    from codesign.cli import demo_checkpoint

    x = np.zeros((4, 1, 8, 8), np.float32)
    x[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=x, y_train=np.zeros(4), x_test=x, y_test=np.zeros(4))
    out = tmp_path / "out"
    filled = [a.format(out=out, ckpt=demo_checkpoint(), nan=tmp_path / "nan.npz") for a in args]
    result = run_cli(*filled)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_eval_and_ptq_on_digits(tmp_path, capsys):
    from codesign.cli import demo_checkpoint

    assert main(["eval", "--checkpoint", str(demo_checkpoint()), "--out", str(tmp_path / "e")]) == 0
    top1 = json.loads((tmp_path / "e" / "result.json").read_text())["top1"]
    assert top1 > 95
    assert (
        main(
            [
                "ptq",
                "--checkpoint",
                str(demo_checkpoint()),
                "--weight-bits",
                "8",
                "--act-bits",
                "8",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "p" / "result.json").read_text())
    assert set(result) >= {"fp32_top1", "quant_top1", "calib_seconds", "layers"}
    assert result["fp32_top1"] == top1
    assert abs(result["quant_top1"] - top1) < 1.0
    low, high = result["quant_top1_ci95"]  # the 95 % interval beside every top-1
    assert low < result["quant_top1"] < high and high - low < 10.0
    # the quantized checkpoint carries its recipe: evaluating it gives the same accuracy
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "p" / "model.pt"),
                "--out",
                str(tmp_path / "e2"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "e2" / "result.json").read_text())["top1"] == result["quant_top1"]


@pytest.mark.slow
@needs_shared
def test_eval_shared_resnet20_known_answer(tmp_path):
    code = main(
        [
            "eval",
            "--checkpoint",
            str(RESNET20_CHECKPOINT),
            "--data",
            f"imagefolder:{CIFAR_SUBSET}",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["top1"] == pytest.approx(100 * 932 / 1017) and result["samples"] == 1017
    assert result["top1_ci95"] == pytest.approx([89.78, 93.19], abs=0.01)  # Wilson, 932/1017
    runtime = result["runtime"]  # where it was measured, so a moved figure can be traced
    assert runtime["torch"] == torch.__version__ and runtime["threads"] == torch.get_num_threads()
    assert runtime["cpu_capability"] and runtime["seed"] == 0


@pytest.mark.slow
@needs_shared
def test_w8a8_ptq_shared_resnet20(tmp_path):
    code = main(
        [
            "ptq",
            "--checkpoint",
            str(RESNET20_CHECKPOINT),
            "--data",
            f"imagefolder:{CIFAR_SUBSET}",
            "--weight-bits",
            "8",
            "--act-bits",
            "8",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "result.json").read_text())["quant_top1"] >= 91.4


def test_simulate_writes_result_and_csv(tmp_path):
    from pathlib import Path

    from codesign.cli import demo_checkpoint

    arch = Path(__file__).resolve().parents[1] / "recipes" / "hardware" / "systolic-16x16-ws.toml"
    out = tmp_path / "sim"
    code = main(
        [
            "simulate",
            "--checkpoint",
            str(demo_checkpoint()),
            "--arch",
            str(arch),
            "--samples",
            "8",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert "samples" not in result  # one key: the capture count is total.samples
    assert result["total"]["samples"] == 8
    assert set(result["total"]) >= {
        "energy_uj_per_inference",
        "energy_by_component_uj_per_inference",
        "cycles",
        "compute_cycles",
        "stall_cycles",
    }
    first = result["layers"][0]
    assert set(first) >= {
        "name",
        "macs",
        "effectual_macs",
        "weight_density",
        "act_density",
        "cycles",
        "compute_cycles",
        "stall_cycles",
        "energy_uj_per_inference",
        "utilization",
    }
    # the stem conv of the digits ResNet-8, per inference: 16 x 1 x 8 x 8 x 3 x 3 MACs
    assert first["name"] == "conv1" and first["macs"] == 16 * 1 * 8 * 8 * 9
    # its bit operations: MACs x weight bits x input bits (the digits model is float: 32 x 32)
    assert first["bops"] == first["macs"] * first["weight_bits"] * first["act_bits"]
    assert result["total"]["bops"] == sum(r["bops"] for r in result["layers"])
    assert result["total"]["cycles"] == pytest.approx(sum(r["cycles"] for r in result["layers"]))
    assert (out / "layers.csv").read_text().count("\n") == len(result["layers"]) + 1


@pytest.mark.parametrize(
    "command",
    [
        ["eval"],
        ["ptq", "--weight-bits", "8", "--act-bits", "8"],
        ["qat", "--weight-bits", "4", "--act-bits", "4"],
        ["prune", "--sparsity", "2:4"],
        ["simulate", "--arch", "scnn"],
    ],
)
@pytest.mark.parametrize("out", ["file", "/dev/null"])
def test_bad_out_is_refused_before_any_work(tmp_path, capsys, command, out) -> None:
    from codesign.cli import demo_checkpoint

    target = tmp_path / "taken.txt" if out == "file" else Path(out)
    if out == "file":
        target.write_text("not a directory")
    args = [*command, "--checkpoint", str(demo_checkpoint()), "--out", str(target)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a directory" in err[0]
    if out == "file":
        assert target.read_text() == "not a directory"
