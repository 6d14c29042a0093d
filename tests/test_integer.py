"""Integer-only inference: dyadic requantization, a layer chain bit-exact against a numpy
int64 reference, accumulator widths, and agreement with the fake-quant model."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from codesign.config import QuantSpec
from codesign.data import load_dataset, logits_of
from codesign.errors import QuantError
from codesign.models import create_model
from codesign.pipeline import load_model, run_ptq
from codesign.quant import calibrate, quantize_
from codesign.quant.integer import (
    accumulator_widths,
    dyadic,
    fraction_agreeing,
    integer_model,
    rescale,
)
from codesign.resources import bundled_checkpoint

SPEC = QuantSpec(weight_bits=4, act_bits=8, method="minmax", bias_correction=False)


def _quantized(model: nn.Module, images: torch.Tensor, spec: QuantSpec = SPEC) -> nn.Module:
    float_model = copy.deepcopy(model)
    quantize_(model, spec)

    def loop(m: nn.Module) -> None:
        with torch.no_grad():
            m(images)

    calibrate(model, loop, spec, float_model=float_model)
    return model.eval()


def test_dyadic_multipliers_known_answer_and_precision() -> None:
    m, shift = dyadic(torch.tensor([0.75, 3.0, 1.0]))
    # 0.75 = 0.75 * 2^0 -> m = 0.75 * 2^31; 3 = 0.75 * 2^2; 1 = 0.5 * 2^1 -> m = 2^30, shift 30
    assert m.tolist() == [3 * 2**29, 3 * 2**29, 2**30]
    assert shift.tolist() == [31, 29, 30]
    multipliers = torch.exp2(torch.empty(1000, dtype=torch.float64).uniform_(-30, 20))
    m, shift = dyadic(multipliers)
    assert bool(((m >= 2**30) & (m < 2**31)).all())
    approx = m.double() / torch.exp2(shift.double())
    assert float(((approx - multipliers) / multipliers).abs().max()) <= 2.0**-31


def test_rescale_rounds_half_up_like_python_integers() -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(-(2**31), 2**31 - 1, (500,), generator=generator, dtype=torch.int64)
    m, shift = dyadic(torch.exp2(torch.empty(500, dtype=torch.float64).uniform_(-25, 5)))
    got = rescale(values.view(1, -1), m, shift).flatten().tolist()
    expected = [
        (v * mm + (1 << (s - 1))) >> s
        for v, mm, s in zip(values.tolist(), m.tolist(), shift.tolist(), strict=True)
    ]
    assert got == expected
    # exact ties round up: 5 * 0.5 = 2.5 -> 3, -5 * 0.5 = -2.5 -> -2
    half_m, half_shift = dyadic(torch.tensor(0.5))
    assert rescale(torch.tensor([5, -5]), half_m, half_shift).tolist() == [3, -2]


def _conv_int64(codes: np.ndarray, weight: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """A reference convolution on integers: zero padding, windows, int64 einsum."""
    padded = np.pad(codes, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = weight.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]  # [N, C, P, Q, R, S]
    return np.einsum("ncpqrs,kcrs->nkpq", windows.astype(np.int64), weight.astype(np.int64))


def _dyadic_python(multiplier: float) -> tuple[int, int]:
    """The dyadic multiplier recomputed with Python floats: m in [2^30, 2^31)."""
    mantissa, exponent = math.frexp(multiplier)
    m, shift = round(mantissa * 2**31), 31 - exponent
    return (m // 2, shift - 1) if m == 2**31 else (m, shift)


def test_conv_chain_is_bit_exact_against_a_numpy_int64_reference() -> None:
    """conv (int8 input codes, 4-bit weights, bias) -> ReLU -> requantize -> conv: the
    second layer's int32 accumulator equals a numpy reference computed with int64 einsum
    and Python-integer requantization."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 3, padding=1)
    )
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0  # a zero weight stays a zero code
    model = _quantized(model, torch.randn(16, 3, 9, 9))
    integer = integer_model(model)
    x = torch.randn(2, 3, 9, 9)
    first, second = integer.get_submodule("0"), integer.get_submodule("2")
    accumulator = second(integer.get_submodule("1")(first(x)))
    assert accumulator.dtype == torch.int32

    def constants(layer: nn.Module) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        codes, scale = layer.integer_weight()
        input_scale = float(layer.input_quantizer.scale)
        bias = np.round(
            layer.bias.detach().double().numpy() / (scale.flatten().double().numpy() * input_scale)
        )
        return codes.numpy(), scale.flatten().double().numpy(), input_scale, bias.astype(np.int64)

    w0, sw0, s0, b0 = constants(model[0])
    w1, _, s1, b1 = constants(model[2])
    assert w0[0, 0].tolist() == [[0, 0, 0]] * 3
    codes0 = np.clip(np.round(x.numpy() / np.float32(s0)), -128, 127).astype(np.int64)
    assert np.array_equal(first.input(x).numpy(), codes0)
    acc0 = np.maximum(_conv_int64(codes0, w0, 2, 1) + b0.reshape(1, -1, 1, 1), 0)
    codes1 = np.empty_like(acc0)
    for k in range(acc0.shape[1]):
        m, shift = _dyadic_python(sw0[k] * s0 / s1)
        codes1[:, k] = np.clip((acc0[:, k] * m + (1 << (shift - 1))) >> shift, 0, 255)
    acc1 = _conv_int64(codes1, w1, 1, 1) + b1.reshape(1, -1, 1, 1)
    assert np.array_equal(accumulator.numpy(), acc1)
    # and the integer model's logits are the fake-quant model's up to the dyadic rounding
    with torch.no_grad():
        reference = model(x)
    assert torch.allclose(integer(x), reference, atol=0.05 * float(reference.abs().max()))


def test_accumulator_is_int64_only_where_int32_could_overflow() -> None:
    """fan-in x 255 x 128 must stay below 2^31: 70,000 8-bit inputs cannot, 16 can."""
    model = _quantized(
        nn.Sequential(nn.Linear(70_000, 2), nn.ReLU(), nn.Linear(2, 3)),
        torch.relu(torch.randn(4, 70_000)),
        QuantSpec(method="minmax", bias_correction=False),
    )
    integer = integer_model(model)
    assert accumulator_widths(integer) == {"0": "int64", "2": "int32"}
    x = torch.relu(torch.randn(3, 70_000))
    with torch.no_grad():
        assert torch.allclose(integer(x), model(x), rtol=1e-2, atol=1e-2)


def test_float_residual_sums_and_unfolded_bn_are_refused() -> None:
    images = torch.randn(8, 3, 16, 16)
    float_sums = _quantized(create_model("resnet8"), images, QuantSpec(residual_bits=0))
    with pytest.raises(QuantError, match="residual_bits"):
        integer_model(float_sums)
    unfolded = _quantized(create_model("resnet8"), images, QuantSpec(fold_bn=False))
    with pytest.raises(QuantError, match="BatchNorm"):
        integer_model(unfolded)
    with pytest.raises(QuantError, match="float input"):
        integer_model(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_integer_w8a8_resnet8_agrees_with_fake_quant_on_digits(per_channel: bool) -> None:
    """The measured known answer on the bundled digits model: >= 99.5 % of the test images
    get the fake-quant model's class from the integer-only model."""
    model, _, _ = load_model(bundled_checkpoint("resnet8-digits"))
    dataset = load_dataset("digits")
    spec = QuantSpec(weight_bits=8, act_bits=8, per_channel=per_channel)
    quantized, _ = run_ptq(model, dataset, spec, calib_samples=128)
    integer = integer_model(quantized)
    assert set(accumulator_widths(integer).values()) == {"int32"}
    agreement = fraction_agreeing(
        logits_of(integer, dataset.test), logits_of(quantized, dataset.test)
    )
    assert agreement >= 0.995
