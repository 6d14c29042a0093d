"""ONNX export: round trips on digits in onnxruntime, quantized residual sums in the graph,
pruned zeros exact in the initializers, the CLI and its missing-extra error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from codesign.cli import main
from codesign.config import QuantSpec, SparsitySpec
from codesign.data import load_dataset
from codesign.errors import ConfigError
from codesign.export import export_onnx, require_onnx
from codesign.export.onnx_graph import OPSET
from codesign.pipeline import load_model, model_kwargs_for, run_ptq, save_model
from codesign.quant import quant_layers
from codesign.resources import bundled_checkpoint
from codesign.sparsity import prune_

W8A8 = QuantSpec(weight_bits=8, act_bits=8)
W4A8 = QuantSpec(weight_bits=4, act_bits=8, keep_8bit=("first", "last"), method="mse")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _float_model():
    model, _, _ = load_model(bundled_checkpoint("resnet8-digits"))
    return model


def _initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


@pytest.mark.parametrize("spec", [W8A8, W4A8], ids=["w8a8", "w4a8"])
def test_onnxruntime_top1_equals_the_torch_model(spec, digits, tmp_path: Path) -> None:
    model, _ = run_ptq(_float_model(), digits, spec, calib_samples=128)
    result = export_onnx(model, tmp_path, digits.test)
    assert result["onnx"] == "model.onnx" and (tmp_path / "model.onnx").is_file()
    assert result["onnx_top1"] == result["torch_top1"]
    assert result["agreement"] >= 0.995 and result["samples"] == len(digits.test)
    proto = onnx.load(tmp_path / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET >= 21
    # W4A8 keeps the first conv and the classifier at 8 bits: 2 INT8 layers, 6 INT4 ones
    expected = {"int8": 8} if spec.weight_bits == 8 else {"int8": 2, "int4": 6}
    assert result["weight_storage"] == expected
    codes = _initializers(proto)
    for name, layer in quant_layers(model):
        stored = codes[f"{name}.weight_codes"].astype(np.int64)
        assert np.array_equal(stored, layer.integer_weight()[0].numpy())


def test_every_residual_add_is_fed_by_two_quantize_dequantize_pairs(digits, tmp_path) -> None:
    model, _ = run_ptq(_float_model(), digits, W8A8, calib_samples=64)
    export_onnx(model, tmp_path, digits.test)
    graph = onnx.load(tmp_path / "model.onnx").graph
    producer = {output: node for node in graph.node for output in node.output}
    adds = [node for node in graph.node if node.op_type == "Add"]
    assert len(adds) == 3  # the three residual blocks of ResNet-8
    for add in adds:
        feeding = [producer[name] for name in add.input]
        assert [node.op_type for node in feeding] == ["DequantizeLinear"] * 2
        assert [producer[node.input[0]].op_type for node in feeding] == ["QuantizeLinear"] * 2


def test_float_residual_sums_export_as_float_adds(digits, tmp_path) -> None:
    spec = QuantSpec(weight_bits=8, act_bits=8, residual_bits=0)
    model, _ = run_ptq(_float_model(), digits, spec, calib_samples=64)
    result = export_onnx(model, tmp_path, digits.test)
    assert (result["residual_sums"], result["residual_sums_quantized"]) == (3, 0)
    graph = onnx.load(tmp_path / "model.onnx").graph
    producer = {output: node for node in graph.node for output in node.output}
    for add in (node for node in graph.node if node.op_type == "Add"):
        assert "DequantizeLinear" not in [producer[name].op_type for name in add.input]


@pytest.mark.parametrize("bits", [8, 4])
def test_pruned_zeros_are_exact_zeros_in_the_onnx_initializers(bits, digits, tmp_path) -> None:
    pruned = prune_(_float_model(), SparsitySpec("2:4"))
    spec = QuantSpec(weight_bits=bits, act_bits=8, method="minmax", bias_correction=False)
    model, _ = run_ptq(pruned, digits, spec, calib_samples=64)
    export_onnx(model, tmp_path, digits.test)
    codes = _initializers(onnx.load(tmp_path / "model.onnx"))
    masked = 0
    for name, layer in quant_layers(model):
        stored = codes[f"{name}.weight_codes"].astype(np.int64)
        zeros = (layer.weight_before_quant() == 0).detach().numpy()
        assert (stored[zeros] == 0).all()
        masked += int(zeros.sum())
        if name not in ("conv1", "linear"):  # 2:4 layers: at most 2 nonzeros per 4 channels
            k, c = stored.shape[:2]
            groups = np.moveaxis(stored, 1, -1).reshape(k, -1, c // 4, 4)
            assert ((groups != 0).sum(-1) <= 2).all()
    assert masked > 0


def test_export_command_writes_the_checked_model(digits, tmp_path) -> None:
    model, _ = run_ptq(_float_model(), digits, W8A8, calib_samples=64)
    checkpoint = tmp_path / "w8a8.pt"
    save_model(checkpoint, model, "resnet8", {"quant": W8A8.to_dict()}, model_kwargs_for(model))
    out = tmp_path / "onnx"
    code = main(
        [
            "export",
            "--checkpoint",
            str(checkpoint),
            "--format",
            "onnx",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert {"onnx_top1", "torch_top1", "agreement", "max_abs_logit_diff", "onnx"} <= set(result)
    assert (out / result["onnx"]).is_file()
    assert 0.995 <= result["agreement"] <= 1.0 and result["onnx_top1"] == result["torch_top1"]


def test_export_refuses_a_float_checkpoint(tmp_path, capsys) -> None:
    args = ["export", "--checkpoint", str(bundled_checkpoint("resnet8-digits"))]
    assert main([*args, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "not quantized" in capsys.readouterr().err
    assert not (tmp_path / "x" / "model.onnx").exists()


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_missing_extra_is_one_line_naming_it(module, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'codesign\[export\]'"):
        require_onnx()
    # the command says so before touching the checkpoint (which does not even exist)
    code = main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'codesign[export]'" in err and module in err
