import copy

import pytest
import torch
from torch import nn

from codesign.config import LayerOverride, QuantSpec
from codesign.errors import ConfigError, QuantError
from codesign.models import create_model
from codesign.pipeline import load_model, model_kwargs_for, save_model
from codesign.quant import calibrate, fold_batchnorm_, quant_layers, quantize_
from codesign.quant.modules import QuantAdd
from codesign.quant.quantizers import ActQuantizer, WeightQuantizer, lsq_quantize
from codesign.quant.ranges import integer_range, mse_scale_per_row


def _loop(images):
    def forward_loop(model):
        with torch.no_grad():
            model(images)

    return forward_loop


def test_integer_range_known_values():
    assert integer_range(8, True) == (-128, 127)
    assert integer_range(4, False) == (0, 15)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_quantizer_invariants(bits):
    weight = torch.randn(6, 3, 3, 3)
    weight[0, 0] = 0.0
    quantizer = WeightQuantizer(weight.shape, bits)
    quantizer.calibrate(weight, "minmax")
    once = quantizer(weight)
    assert torch.all(once[0, 0] == 0), "zero must stay exactly zero"
    assert torch.equal(quantizer(once), once), "quantization must be idempotent"
    codes = quantizer.integer_codes(weight)
    qmin, qmax = integer_range(bits, True)
    assert codes.min() >= qmin and codes.max() <= qmax
    assert torch.allclose(codes.float() * quantizer.scale, once)
    # min-max: the largest magnitude of each channel is representable up to rounding of the grid
    assert torch.allclose(once.abs().flatten(1).amax(1), weight.abs().flatten(1).amax(1), rtol=0.2)


def test_act_quantizer_clamps_and_picks_unsigned_after_relu():
    quantizer = ActQuantizer(4)
    quantizer.mode = "observe"
    quantizer(torch.rand(1000) * 3)
    quantizer.finish_observation("minmax")
    assert not bool(quantizer.signed)
    out = quantizer(torch.tensor([-1.0, 0.0, 100.0]))
    assert out[0] == 0 and out[1] == 0
    assert out[2] == pytest.approx(15 * float(quantizer.scale))


def test_straight_through_gradient_is_identity_inside_range():
    x = torch.tensor([0.26, -0.49, 5.0], requires_grad=True)
    y = torch.fake_quantize_per_tensor_affine(x, 0.1, 0, -8, 7)
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]  # clipped value gets no gradient


def test_lsq_step_size_gradient_matches_paper():
    # Esser et al. 2020, eq. 3: d(x_hat)/ds = -x/s + round(x/s) inside the range, qmin/qmax outside.
    x = torch.tensor([0.26, 5.0, -5.0])
    scale = torch.tensor(0.1, requires_grad=True)
    lsq_quantize(x, scale, -8, 7, grad_factor=1.0).sum().backward()
    expected = (-2.6 + 3.0) + 7 + (-8)
    assert scale.grad.item() == pytest.approx(expected, abs=1e-4)


def test_mse_scale_beats_minmax_on_heavy_tail():
    x = torch.cat([torch.randn(10000), torch.tensor([40.0])]).view(1, -1)
    mse = mse_scale_per_row(x, -8, 7)
    minmax = x.abs().max() / 7

    def err(s):
        return ((torch.clamp(torch.round(x / s), -8, 7) * s - x) ** 2).mean()

    assert err(mse) < err(minmax)


def test_fold_batchnorm_preserves_outputs():
    model = create_model("resnet8").eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 16, 16)
    reference = model(x)
    pairs = fold_batchnorm_(model)
    assert len(pairs) == 7
    assert torch.allclose(model(x), reference, atol=1e-4)


def _quantized_resnet(spec: QuantSpec):
    model = create_model("resnet8").eval()
    images = torch.randn(16, 3, 16, 16)
    float_model = copy.deepcopy(model)
    quantize_(model, spec)
    calibrate(model, _loop(images), spec, float_model=float_model)
    return model, float_model, images


@pytest.mark.parametrize("wbits,abits", [(8, 8), (4, 4), (4, 8)])
def test_integer_forward_equals_fake_quant(wbits, abits):
    model, _, images = _quantized_resnet(QuantSpec(weight_bits=wbits, act_bits=abits))
    captured = {}

    def keep(name):
        def hook(module, inputs, output):
            captured[name] = (inputs[0].detach(), output.detach())

        return hook

    for name, layer in quant_layers(model):
        layer.register_forward_hook(keep(name))
    model(images)
    for name, layer in quant_layers(model):
        layer_input, fake_output = captured[name]
        integer_output = layer.integer_forward(layer_input)
        tolerance = 1e-4 * fake_output.abs().max().item() + 1e-5
        assert torch.allclose(integer_output, fake_output, atol=tolerance), name
        codes, _ = layer.integer_weight()
        assert codes.dtype == torch.int32


def test_w8a8_close_to_float():
    model, float_model, images = _quantized_resnet(QuantSpec(weight_bits=8, act_bits=8))
    fold_batchnorm_(float_model)
    reference = float_model(images)
    assert (model(images) - reference).abs().max() < 0.1 * reference.abs().max()


def test_keep_8bit_and_overrides_last_match_wins():
    spec = QuantSpec(
        weight_bits=4,
        act_bits=4,
        keep_8bit=("first", "last"),
        overrides=(
            LayerOverride("layer1.*", weight_bits=6),
            LayerOverride("layer1.0.conv2", weight_bits=5),
        ),
    )
    model = quantize_(create_model("resnet8"), spec)
    bits = {name: (layer.weight_bits, layer.input_bits) for name, layer in quant_layers(model)}
    assert bits["conv1"] == (8, 8) and bits["linear"] == (8, 8)
    assert bits["layer1.0.conv1"] == (6, 4)
    assert bits["layer1.0.conv2"] == (5, 4)
    assert bits["layer2.0.conv1"] == (4, 4)


def test_override_matching_nothing_is_an_error():
    spec = QuantSpec(overrides=(LayerOverride("layer9.*", weight_bits=4),))
    with pytest.raises(ConfigError, match="matches no layer"):
        quantize_(create_model("resnet8"), spec)


@pytest.mark.parametrize("bits", [1, 9, 0])
def test_unsupported_width_is_an_error(bits):
    with pytest.raises(ConfigError, match="2 to 8"):
        QuantSpec(weight_bits=bits)


def test_quantizing_twice_is_an_error():
    model = quantize_(create_model("resnet8"), QuantSpec())
    with pytest.raises(QuantError, match="already quantized"):
        quantize_(model, QuantSpec())


def test_empty_calibration_is_an_error():
    model = create_model("resnet8").eval()
    float_model = copy.deepcopy(model)
    spec = QuantSpec()
    quantize_(model, spec)
    with pytest.raises(QuantError, match="no input"):
        calibrate(model, lambda m: None, spec, float_model=float_model)


def test_residual_sums_get_quantized_operands_unless_residual_bits_is_0():
    model, _, _ = _quantized_resnet(QuantSpec(weight_bits=8, act_bits=8))
    adds = [m for _, m in model.named_modules() if isinstance(m, QuantAdd)]
    assert len(adds) == 3 and all(add.bits == 8 for add in adds)
    for add in adds:
        # the main branch (conv + folded BN) is signed; the shortcut follows a ReLU
        assert bool(add.main_quantizer.signed) and not bool(add.shortcut_quantizer.signed)
    main, shortcut = torch.randn(2, 16, 4, 4), torch.rand(2, 16, 4, 4)
    expected = adds[0].main_quantizer(main) + adds[0].shortcut_quantizer(shortcut)
    assert torch.equal(adds[0](main, shortcut), expected)
    floats = quantize_(create_model("resnet8"), QuantSpec(residual_bits=0))
    assert not any(isinstance(m, QuantAdd) for m in floats.modules())
    with pytest.raises(ConfigError, match="0 \\(float sums\\) or from 2 to 8"):
        QuantSpec(residual_bits=1)


def test_checkpoint_without_residual_bits_loads_with_float_sums_and_bias(tmp_path):
    """A checkpoint written before residual sums and biases were quantized names neither
    residual_bits nor quantize_bias: it is rebuilt with float sums and float biases, as it was
    calibrated, and computes what it did."""
    spec = QuantSpec(weight_bits=8, act_bits=8, residual_bits=0, quantize_bias=False)
    model, _, images = _quantized_resnet(spec)
    new_keys = ("residual_bits", "quantize_bias")
    old_recipe = {"quant": {k: v for k, v in spec.to_dict().items() if k not in new_keys}}
    save_model(tmp_path / "old.pt", model, "resnet8", old_recipe, model_kwargs_for(model))
    loaded, _, _ = load_model(tmp_path / "old.pt")
    assert not any(isinstance(m, QuantAdd) for m in loaded.modules())
    assert not any(layer.quantize_bias for _, layer in quant_layers(loaded))
    with torch.no_grad():
        assert torch.equal(loaded(images), model.eval()(images))


@pytest.mark.parametrize("quantize_bias", [True, False])
def test_bias_is_added_on_the_accumulator_grid(quantize_bias):
    """With quantize_bias the forward adds integer codes x s_w[k] x s_x (what integer_bias()
    gives, and what the integer model and the ONNX graph add); without it the float bias."""
    spec = QuantSpec(
        weight_bits=4,
        act_bits=4,
        method="minmax",
        bias_correction=False,
        quantize_bias=quantize_bias,
    )
    model, _, _ = _quantized_resnet(spec)
    layer = model.layer1[0].conv1
    with torch.no_grad():  # the untrained model's folded biases are all zero
        layer.bias.copy_(torch.randn(layer.out_channels) * 0.1)
    grid = layer.bias_grid()
    added = layer.effective_bias().double()
    if quantize_bias:
        assert torch.allclose(added, layer.integer_bias().double() * grid, rtol=1e-6, atol=0)
        assert not torch.equal(added, layer.bias.double())  # 4-bit grids round visibly
    else:
        assert torch.equal(added, layer.bias.double())
    x = torch.relu(torch.randn(2, 16, 8, 8))
    expected = nn.functional.conv2d(
        layer.input_quantizer(x), layer.weight, layer.effective_bias(), 1, 1
    )
    assert torch.equal(layer(x), expected)
