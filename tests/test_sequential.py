"""Layer-wise propagation: each layer runs once per batch, its inputs equal what re-running the
network prefix gives, and the solvers (SparseGPT, GPTQ, AdaRound) answer the same both ways."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from codesign.config import QuantSpec, SparsitySpec
from codesign.models import create_model
from codesign.quant import calibrate, quant_layers, quantize_, sequential
from codesign.quant.adaround import AdaRoundConfig, adaround_
from codesign.quant.gptq import gptq_
from codesign.quant.sequential import (
    PropagationWarning,
    layer_inputs,
    record_batches,
    rerun_inputs,
)
from codesign.sparsity.obs import sparsegpt_prune_
from codesign.sparsity.prune import weight_masks


def _resnet8_and_loop(samples: int = 32, batch: int = 16):
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10).eval()
    images = torch.randn(samples, 3, 16, 16)

    def loop(m: nn.Module) -> None:
        with torch.no_grad():
            for chunk in images.split(batch):
                m(chunk)

    return model, loop


def _untraceable(model: nn.Module):
    """Stands in for the tracer to force the fallback: every layer re-runs the network up to
    it, which is what the solvers did before propagation."""
    raise TypeError("not traceable")


def _conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_each_layer_runs_once_per_batch_and_sees_the_prefix_inputs():
    model, loop = _resnet8_and_loop()
    names = _conv_names(model)
    batches = record_batches(loop)
    assert len(batches) == 2
    calls = dict.fromkeys(names, 0)
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda *_, n=n: calls.__setitem__(n, calls[n] + 1)
        )
        for n in names
    ]
    walked = {name: inputs for name, inputs in layer_inputs(model, names, batches)}
    for handle in handles:
        handle.remove()
    assert list(walked) == names, "forward order"
    assert all(count == len(batches) for count in calls.values()), calls
    for name, inputs in walked.items():
        expected = rerun_inputs(model, name, batches)
        assert all(torch.equal(a, b) for a, b in zip(inputs, expected, strict=True)), name


def test_torchvision_resnet_in_place_ops_propagate_like_eager():
    # torchvision's blocks use ReLU(inplace=True) and `out += identity`.
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).eval()
    batches = [((torch.randn(2, 3, 32, 32),), {})]
    names = _conv_names(model)
    eager: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda _, args, n=n: eager.__setitem__(n, args[0].clone())
        )
        for n in names
    ]
    with torch.no_grad():
        model(*batches[0][0])
    for handle in handles:
        handle.remove()
    for name, inputs in layer_inputs(model, names, batches):
        assert torch.equal(inputs[0], eager[name]), name


class _DataDependent(nn.Module):
    """Control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if y.sum() > 0:
            y = -y
        return self.b(y)


def test_untraceable_model_falls_back_to_rerunning_the_prefix():
    model = _DataDependent()
    batches = [((torch.randn(3, 4),), {})]
    with pytest.warns(PropagationWarning, match="quadratic"):
        walked = dict(layer_inputs(model, ["a", "b"], batches))
    expected = model.a(batches[0][0][0])
    expected = -expected if expected.sum() > 0 else expected
    torch.testing.assert_close(walked["b"][0], expected, rtol=0, atol=0)


def _sparsegpt_model(loop, base):
    model = copy.deepcopy(base)
    sparsegpt_prune_(model, SparsitySpec("2:4", method="sparsegpt"), loop)
    return model


def test_sparsegpt_propagated_equals_prefix_rerun():
    base, loop = _resnet8_and_loop()
    propagated = _sparsegpt_model(loop, base)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequential, "trace_layers", _untraceable)
        with pytest.warns(PropagationWarning):
            rerun = _sparsegpt_model(loop, base)
    masks_a, masks_b = weight_masks(propagated), weight_masks(rerun)
    assert masks_a.keys() == masks_b.keys() and masks_a
    for name in masks_a:
        assert torch.equal(masks_a[name].mask, masks_b[name].mask), name
    rerun_state = rerun.state_dict()
    assert list(rerun_state) == list(propagated.state_dict())
    for name, a in propagated.state_dict().items():
        b = rerun_state[name]
        assert torch.equal(a, b), name


def _quantized(base, loop, solver):
    spec = QuantSpec(
        weight_bits=3,
        act_bits=8,
        method="minmax",
        bias_correction=False,
        keep_8bit=("first", "last"),
    )
    model = quantize_(copy.deepcopy(base), spec)
    calibrate(model, loop, spec, float_model=base)  # ranges, nearest rounding
    layers = [(n, m) for n, m in quant_layers(model) if m.weight_bits < 8]
    report = solver(model, layers)
    return model, report


@pytest.mark.parametrize("method", ["gptq", "adaround"])
def test_quant_solvers_propagated_equal_prefix_rerun(method):
    base, loop = _resnet8_and_loop()
    if method == "gptq":

        def solver(model, layers):
            return gptq_(model, loop, layers)
    else:
        config = AdaRoundConfig(iterations=10)

        def solver(model, layers):
            return adaround_(model, base, loop, layers, config)

    propagated, report = _quantized(base, loop, solver)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequential, "trace_layers", _untraceable)
        with pytest.warns(PropagationWarning):
            rerun, _ = _quantized(base, loop, solver)
    assert len(report) == 6, "the six 3-bit convs of ResNet-8 (conv1 and linear kept at 8)"
    rerun_state = rerun.state_dict()
    assert list(rerun_state) == list(propagated.state_dict())
    for name, a in propagated.state_dict().items():
        b = rerun_state[name]
        assert torch.equal(a, b), name


@pytest.mark.parametrize("name", ["resnet8", "resnet18"])
def test_quantized_resnets_trace_without_falling_back(name):
    """Quantized residual adds (QuantAdd) are leaves: the models the solvers calibrate trace,
    so propagation stays linear in depth instead of warning and re-running each prefix."""
    model = create_model(name, num_classes=4)
    quantize_(model, QuantSpec(weight_bits=4, act_bits=4))
    graph = sequential.trace_layers(model)
    called = {node.target for node in graph.nodes if node.op == "call_module"}
    adds = {n for n, m in model.named_modules() if type(m).__name__ == "QuantAdd"}
    assert adds and adds <= called
