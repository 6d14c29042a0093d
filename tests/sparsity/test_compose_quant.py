"""Pruning composed with quantization: zeros stay exact through PTQ and QAT steps."""

from __future__ import annotations

import pytest
import torch

from codesign import quant
from codesign.config import QuantSpec, SparsitySpec
from codesign.sparsity import SparsityWarning, prune_, sparsity_report, update_masks_, weight_masks


def _calibrated(model: torch.nn.Module, weight_bits: int) -> QuantSpec:
    spec = QuantSpec(weight_bits=weight_bits, act_bits=8, method="minmax", bias_correction=False)
    quant.quantize_(model, spec)
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    quant.calibrate(model, lambda m: m(images), spec)
    return spec


def test_two_four_then_int4_keeps_zeros_and_compliance(tiny_net) -> None:
    with pytest.warns(SparsityWarning, match="conv_b"):
        prune_(tiny_net, SparsitySpec("2:4", exclude=("conv1",)))
    masked = {n: m.mask.clone() for n, m in weight_masks(tiny_net).items()}
    _calibrated(tiny_net, weight_bits=4)
    layer = tiny_net.block.conv_a
    assert isinstance(layer, quant.QuantConv2d)
    # The mask stays first, the quantizer is appended after it.
    assert type(layer.parametrizations.weight[-1]).__name__ == "WeightQuantizer"
    assert torch.equal(weight_masks(tiny_net)["block.conv_a"].mask, masked["block.conv_a"])
    assert (layer.weight[~masked["block.conv_a"]] == 0).all()
    codes, _ = layer.integer_weight()
    assert (codes[~masked["block.conv_a"]] == 0).all()
    report = sparsity_report(tiny_net)
    assert {row["name"]: row["nm_compliant"] for row in report["layers"]}["fc"] is True


def test_masks_survive_qat_steps_and_rescheduling(tiny_net) -> None:
    prune_(tiny_net, SparsitySpec("0.7", exclude=()), target_fraction=0.5)
    _calibrated(tiny_net, weight_bits=8)
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    for step in range(4):
        if step == 2:
            update_masks_(tiny_net, 1.0)  # the cubic schedule raising the level mid-QAT
        loss = tiny_net(torch.randn(8, 3, 8, 8, generator=generator)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, mask in weight_masks(tiny_net).items():
        weight = tiny_net.get_submodule(name).weight
        assert (weight[~mask.mask] == 0).all(), name
        assert float((~mask.mask).float().mean()) >= 0.69
