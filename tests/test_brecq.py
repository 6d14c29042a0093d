"""Block reconstruction (BRECQ with QDrop): the block output error drops below nearest
rounding's, weights end on the quantizer grid, QDrop at probability 0 is the plain path, and
the units are the residual blocks plus the layers outside them."""

import copy

import pytest
import torch

from codesign.config import QuantSpec
from codesign.models import create_model
from codesign.quant import calibrate, quant_layers, quantize_
from codesign.quant.brecq import (
    BrecqConfig,
    _dropping,
    _soft_rounding,
    brecq_,
    drop_quantization,
    reconstruct_unit,
    reconstruction_units,
)
from codesign.quant.fold import fold_batchnorm_
from codesign.quant.quantizers import ActQuantizer

FAST = BrecqConfig(iterations=60, batch_size=8)


def calibrated_resnet8(weight_bits: int, act_bits: int, samples: int = 24):
    """A seeded float ResNet-8, its quantized twin with scales calibrated (min-max ranges,
    nearest rounding, no bias correction) and the forward loop over random 8x8 images."""
    torch.manual_seed(0)
    float_model = create_model("resnet8", num_classes=10).eval()
    images = torch.relu(torch.randn(samples, 3, 8, 8)).cumsum(-1) / 4

    def loop(model):
        with torch.no_grad():
            model(images)

    spec = QuantSpec(
        weight_bits=weight_bits,
        act_bits=act_bits,
        keep_8bit=("first", "last"),
        method="minmax",
        bias_correction=False,
    )
    model = quantize_(copy.deepcopy(float_model), spec)
    calibrate(model, loop, spec, float_model=float_model)
    return float_model, model, loop


def block_data(model, float_model, loop):
    """The first residual block's quantized unit, its layers, and (quant inputs, float
    inputs, float outputs) from a hook on both models."""
    name, layers = reconstruction_units(model)[0]
    captured = {}

    def grab(key):
        def hook(_, inputs, output):
            captured[key] = (inputs[0].detach(), output.detach())

        return hook

    reference = copy.deepcopy(float_model)
    fold_batchnorm_(reference)
    handles = [
        model.get_submodule(name).register_forward_hook(grab("q")),
        reference.get_submodule(name).register_forward_hook(grab("f")),
    ]
    loop(model)
    loop(reference)
    for handle in handles:
        handle.remove()
    return name, layers, captured["q"][0], captured["f"][0], captured["f"][1]


def test_units_are_blocks_and_layers_outside_them():
    _, model, _ = calibrated_resnet8(4, 4)
    units = reconstruction_units(model)
    # ResNet-8: one block per stage; stem conv and classifier are kept at 8 bits, so skipped.
    assert [name for name, _ in units] == ["layer1.0", "layer2.0", "layer3.0"]
    assert [n for n, _ in units[0][1]] == ["layer1.0.conv1", "layer1.0.conv2"]


def test_reconstruction_lowers_block_output_error_and_leaves_grid_weights():
    float_model, model, loop = calibrated_resnet8(3, 4)
    name, layers, quant_in, float_in, target = block_data(model, float_model, loop)
    unit = model.get_submodule(name)
    report = reconstruct_unit(unit, layers, quant_in, float_in, target, FAST)
    assert report["learned_error"] < 0.8 * report["nearest_error"]
    # The same error computed another way: the block's output against the float block's.
    with torch.no_grad():
        assert float((unit(quant_in) - target).pow(2).mean()) == pytest.approx(
            report["learned_error"], rel=1e-4
        )
    for _, layer in layers:
        weight = layer.weight_before_quant().detach()
        quantizer = layer.weight_quantizer
        codes = weight / quantizer.scale
        assert torch.allclose(codes, codes.round(), atol=1e-4), "weights on the grid"
        assert codes.min() >= quantizer.qmin - 1e-4 and codes.max() <= quantizer.qmax + 1e-4
        # Nearest rounding of the stored weight reproduces it: the forward uses these codes.
        assert torch.allclose(layer.weight, weight, atol=1e-6)
    steps = [m for m in unit.modules() if isinstance(m, ActQuantizer)]
    assert all(not q.learn_scale and not q.scale.requires_grad for q in steps)
    assert all(float(q.scale) > 0 for q in steps)


def test_qdrop_at_zero_is_the_plain_path_and_at_one_the_float_activations():
    float_model, model, loop = calibrated_resnet8(4, 4)
    name, layers, quant_in, float_in, _ = block_data(model, float_model, loop)
    unit = model.get_submodule(name)
    quantizers = [m for m in unit.modules() if isinstance(m, ActQuantizer)]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad(), _soft_rounding(layers):
        plain = unit(quant_in)
        with _dropping(quantizers, 0.0, generator):
            dropped_none = unit(drop_quantization(quant_in, float_in, 0.0, generator))
        with _dropping(quantizers, 1.0, generator):
            dropped_all = unit(drop_quantization(quant_in, float_in, 1.0, generator))
        for quantizer in quantizers:
            quantizer.mode = "off"
        unquantized = unit(float_in)
        for quantizer in quantizers:
            quantizer.mode = "quantize"
    assert torch.equal(dropped_none, plain)
    assert torch.equal(dropped_all, unquantized)
    assert not torch.equal(plain, unquantized)


def test_drop_quantization_mixes_elementwise_at_the_probability():
    quantized, unquantized = torch.zeros(200_000), torch.ones(200_000)
    mixed = drop_quantization(quantized, unquantized, 0.3, torch.Generator().manual_seed(1))
    assert set(mixed.unique().tolist()) == {0.0, 1.0}
    assert float(mixed.mean()) == pytest.approx(0.3, abs=0.005)


def test_brecq_is_seeded_and_qdrop_changes_the_solution():
    def run(drop_prob):
        float_model, model, loop = calibrated_resnet8(4, 4, samples=16)
        config = BrecqConfig(iterations=10, batch_size=4, drop_prob=drop_prob)
        report = brecq_(model, float_model, loop, config)
        return report, {n: m.weight_before_quant().detach() for n, m in quant_layers(model)}

    report_a, weights_a = run(0.5)
    _, weights_b = run(0.5)
    _, weights_plain = run(0.0)
    assert list(report_a) == ["layer1.0", "layer2.0", "layer3.0"]
    assert all(torch.equal(weights_a[n], weights_b[n]) for n in weights_a)
    assert any(not torch.equal(weights_a[n], weights_plain[n]) for n in weights_a)


def test_calibrate_brecq_skips_bias_correction_of_reconstructed_layers():
    torch.manual_seed(0)
    float_model = create_model("resnet8", num_classes=10).eval()
    images = torch.randn(16, 3, 8, 8)

    def loop(model):
        with torch.no_grad():
            model(images)

    spec = QuantSpec(weight_bits=4, act_bits=4, keep_8bit=("first", "last"), method="brecq")
    model = quantize_(copy.deepcopy(float_model), spec)
    timed = []
    info = calibrate(
        model,
        loop,
        spec,
        float_model=float_model,
        on_layer=lambda n, s: timed.append(n),
        brecq_config=BrecqConfig(iterations=10, batch_size=4),
    )
    assert info["method"] == "brecq"
    assert timed == list(info["brecq"]) == ["layer1.0", "layer2.0", "layer3.0"]
    assert info["bias_corrected"] == [], "every 4-bit layer was reconstructed"
