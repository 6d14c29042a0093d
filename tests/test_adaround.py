"""Learned rounding (AdaRound): decisions converge to 0/1, codes stay floor/ceil of w/s on
the integer grid, and the layer's output error drops below nearest rounding's."""

import copy

import pytest
import torch
from torch import nn

from codesign.config import QuantSpec
from codesign.models import create_model
from codesign.quant import calibrate, quant_layers, quantize_
from codesign.quant.adaround import (
    AdaRoundConfig,
    gram_matrices,
    learn_rounding,
    rectified_sigmoid,
    rounding_regularizer,
)


def test_rectified_sigmoid_reaches_both_ends_and_regularizer_is_zero_there():
    h = rectified_sigmoid(torch.tensor([-10.0, 0.0, 10.0]))
    assert h.tolist() == [0.0, pytest.approx(0.5), 1.0]
    assert float(rounding_regularizer(torch.tensor([0.0, 1.0]), 2.0)) == 0.0
    assert float(rounding_regularizer(torch.tensor([0.5]), 2.0)) == 1.0


@pytest.fixture(scope="module")
def synthetic_layer():
    """A 3x3 conv on inputs whose neighbouring pixels are strongly correlated (a cumulative
    sum), which is where rounding errors of neighbouring weights can cancel."""
    torch.manual_seed(0)
    layer = nn.Conv2d(8, 16, 3, padding=1)
    x = torch.relu(torch.randn(32, 8, 8, 8)).cumsum(-1)
    scale = layer.weight.detach().abs().flatten(1).amax(1).view(-1, 1, 1, 1) / 7
    grams = gram_matrices(layer, [x], [x], torch.Generator().manual_seed(0))
    return layer, x, scale, grams


def test_learned_rounding_is_floor_or_ceil_and_decided(synthetic_layer):
    layer, _, scale, grams = synthetic_layer
    codes, stats = learn_rounding(layer.weight, scale, -8, 7, grams, AdaRoundConfig())
    floor = torch.floor(layer.weight.detach() / scale)
    assert torch.equal(codes, codes.round()), "codes are integers"
    assert bool(((codes == floor) | (codes == floor + 1)).all()), "only floor or ceil"
    assert codes.min() >= -8 and codes.max() <= 7
    assert stats["undecided"] < 0.01, "the regularizer drives h(V) to 0 or 1"


def test_learned_rounding_lowers_the_output_error(synthetic_layer):
    layer, x, scale, grams = synthetic_layer
    codes, stats = learn_rounding(layer.weight, scale, -8, 7, grams, AdaRoundConfig())
    assert stats["learned_error"] < 0.7 * stats["nearest_error"]

    # The same comparison computed another way: the conv outputs themselves.
    def output_mse(weight: torch.Tensor) -> float:
        with torch.no_grad():
            return float((nn.functional.conv2d(x, weight - layer.weight, padding=1)).pow(2).mean())

    nearest = torch.clamp(torch.round(layer.weight.detach() / scale), -8, 7) * scale
    assert output_mse(codes * scale) < output_mse(nearest)


def resnet8_with_loop(samples: int):
    """A seeded float ResNet-8 and a forward loop over ``samples`` random 16x16 images."""
    torch.manual_seed(0)
    float_model = create_model("resnet8", num_classes=10).eval()
    images = torch.randn(samples, 3, 16, 16)

    def loop(model):
        with torch.no_grad():
            model(images)

    return float_model, loop


def test_calibrate_adaround_bakes_grid_weights_and_keeps_8bit_layers():
    float_model, loop = resnet8_with_loop(64)
    spec = QuantSpec(weight_bits=4, act_bits=8, keep_8bit=("first", "last"), method="adaround")
    model = quantize_(copy.deepcopy(float_model), spec)
    info = calibrate(model, loop, spec, float_model=float_model)
    layers = dict(quant_layers(model))
    assert set(info["adaround"]) == {n for n, m in layers.items() if m.weight_bits < 8}
    assert not set(info["adaround"]) & set(info["bias_corrected"])
    for layer in layers.values():
        ratio = layer.weight_before_quant() / layer.weight_quantizer.scale
        if layer.weight_bits < 8:
            assert torch.allclose(ratio, ratio.round(), atol=1e-4), "baked onto the grid"
            codes, _ = layer.integer_weight()
            assert torch.equal(layer.weight, codes.float() * layer.weight_quantizer.scale)


def test_auto_learns_rounding_below_8_bits_only_and_can_skip_it():
    float_model, loop = resnet8_with_loop(32)
    w8 = QuantSpec(weight_bits=8, act_bits=8)
    info = calibrate(quantize_(copy.deepcopy(float_model), w8), loop, w8, float_model=float_model)
    assert "adaround" not in info, "8-bit weights keep nearest rounding"
    w4 = QuantSpec(weight_bits=4, act_bits=8)
    model = quantize_(copy.deepcopy(float_model), w4)
    info = calibrate(model, loop, w4, float_model=float_model, learned_rounding=False)
    assert "adaround" not in info and info["bias_corrected"], "QAT's start: nearest + bias fix"
