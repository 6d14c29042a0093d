"""Integer-only inference of a quantized model, the way integer hardware runs it.

:func:`integer_model` lowers a quantized model (BN folded, residual sums quantized) to a
``torch.fx.GraphModule`` whose tensors between the input and the logits are integers only:

- the float image is quantized once at the boundary by the first layer's input quantizer;
- each Conv2d/Linear multiplies int32 input codes by int32 weight codes (the model's own,
  masks included, so pruned zeros stay exact zeros) and adds an int32 bias quantized to the
  accumulator's scale ``s_x * s_w[k]``. The accumulation is int32 where the layer's worst
  case (fan-in x max |input code| x max |weight code| + max |bias code|) stays below 2^31
  (at 8 bits, fan-ins up to about 65,000: every layer of the CIFAR and ImageNet ResNets, whose
  largest fan-in is 4,608), else int64;
- every change of scale (an accumulator into the next layer's input codes, a residual
  operand onto its grid) is a requantization by a dyadic number m / 2^shift with a 31-bit m
  (HAWQ-V3, Yao et al. 2021; TFLite's ``MultiplyByQuantizedMultiplier``, Jacob et al. 2018),
  computed in int64, rounded half up, clamped to the consumer's integer range. A ReLU before
  a quantizer is the clamp at 0 (the rounding keeps 0 at 0);
- a residual sum requantizes both operands to their own codes (the model's ``QuantAdd``
  quantizers), then puts them on a common grid 2^20 finer than the coarser operand's (TFLite's
  ADD, ``left_shift = 20``) and adds in int32 (8-bit codes x 2^20 < 2^28);
- global average pooling sums in int64 and divides by the pixel count, rounded half up;
- the last layer's int32 accumulator is the only tensor dequantized: logits = acc x scale.

The integer model therefore differs from the fake-quant model only by the dyadic rounding of
each multiplier (relative error below 2^-30), round-half-up instead of round-half-to-even at
exact ties, float rounding in the fake-quant model's own arithmetic, and, for a model quantized
with ``quantize_bias = false``, the rounding of its float bias to the accumulator grid.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from codesign.errors import QuantError
from codesign.models.cifar_resnet import PadShortcut
from codesign.models.residual import ResidualAdd
from codesign.quant.graph import node_module, trace_quantized, unsupported
from codesign.quant.modules import QUANT_LAYERS, QuantAdd, QuantConv2d
from codesign.quant.quantizers import ActQuantizer

INT32_MAX = 2**31 - 1
# TFLite's ADD puts both operands on a grid 2^20 finer than the coarser one before adding.
SUM_FRACTION_BITS = 20
MULTIPLIER_BITS = 31  # m in [2^30, 2^31): the int32 fixed-point multiplier of TFLite/HAWQ-V3
MAX_SHIFT = 62  # an int64 product m * value with |value| < 2^31 stays below 2^62

Scale = torch.Tensor | None  # float64, [] per tensor or [C] per channel (dim 1); None: float


def dyadic(multiplier: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, shift)``, int64 tensors of ``multiplier``'s shape, with multiplier ~ m / 2^shift,
    m in [2^30, 2^31) (relative error <= 2^-31) and shift in [1, 62].

    >>> m, shift = dyadic(torch.tensor([0.75, 3.0]))
    >>> m.tolist(), shift.tolist()
    ([1610612736, 1610612736], [31, 29])
    """
    values = multiplier.double()
    if not bool((values > 0).all()) or not bool(torch.isfinite(values).all()):
        raise QuantError("a requantization multiplier is not a positive finite number")
    mantissa, exponent = torch.frexp(values)  # values = mantissa * 2^exponent, mantissa in [0.5, 1)
    m = torch.round(mantissa * 2.0**MULTIPLIER_BITS).long()
    shift = MULTIPLIER_BITS - exponent.long()
    carry = m == 2**MULTIPLIER_BITS  # the mantissa rounded up to 1.0
    m = torch.where(carry, m // 2, m)
    shift = torch.where(carry, shift - 1, shift)
    # Multipliers below 2^-32 lose low bits of m instead of shifting past 62 (|result| < 1).
    m = torch.where(shift > MAX_SHIFT, m >> (shift - MAX_SHIFT).clamp_min(0), m)
    shift = shift.clamp_max(MAX_SHIFT)
    if bool((shift < 1).any()):
        raise QuantError(
            f"a requantization multiplier is >= 2^{MULTIPLIER_BITS - 1}: the scales of two "
            "consecutive quantizers are too far apart for integer requantization"
        )
    return m, shift


def _channel_view(tensor: torch.Tensor, dims: int) -> torch.Tensor:
    """A [] or [C] constant shaped to broadcast along dim 1 of a ``dims``-d tensor."""
    if tensor.dim() == 0:
        return tensor
    return tensor.view((1, -1) + (1,) * (dims - 2))


def rescale(values: torch.Tensor, m: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """round(values * m / 2^shift), half up, in int64 (|values| < 2^31, so no overflow)."""
    m, shift = _channel_view(m, values.dim()), _channel_view(shift, values.dim())
    product = values.to(torch.int64) * m
    return torch.bitwise_right_shift(product + torch.bitwise_left_shift(1, shift - 1), shift)


class Requantize(nn.Module):
    """Integer values at one scale -> int32 codes of a quantizer: clamp(rescale, qmin, qmax)."""

    def __init__(self, multiplier: torch.Tensor, qmin: int, qmax: int) -> None:
        super().__init__()
        m, shift = dyadic(multiplier)
        self.register_buffer("m", m)
        self.register_buffer("shift", shift)
        self.qmin, self.qmax = qmin, qmax

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return rescale(values, self.m, self.shift).clamp(self.qmin, self.qmax).to(torch.int32)


class QuantizeInput(nn.Module):
    """The float input -> int32 codes, as the first layer's input quantizer rounds it."""

    def __init__(self, quantizer: ActQuantizer) -> None:
        super().__init__()
        self.scale = float(quantizer.scale)
        self.qmin, self.qmax = quantizer.qrange

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(x / self.scale), self.qmin, self.qmax).to(torch.int32)


def _input_step(quantizer: ActQuantizer, scale: Scale) -> nn.Module:
    """Float input -> codes, or integer values at ``scale`` -> this quantizer's codes."""
    if scale is None:
        return QuantizeInput(quantizer)
    qmin, qmax = quantizer.qrange
    return Requantize(scale / float(quantizer.scale), qmin, qmax)


class IntegerLayer(nn.Module):
    """A Conv2d/Linear on integer codes: input codes (requantized from the producer's scale),
    int32 weight codes [K, C, R, S] / [K, C], int32 bias at the accumulator's scale, and
    accumulation in ``accumulator`` (int32, or int64 where int32 could overflow)."""

    def __init__(self, name: str, layer: QuantConv2d | nn.Module, input_scale: Scale) -> None:
        super().__init__()
        self.layer_name = name
        quantizer: ActQuantizer = layer.input_quantizer  # type: ignore[assignment]
        self.input = _input_step(quantizer, input_scale)
        codes, weight_scale = layer.integer_weight()  # type: ignore[operator]
        self.register_buffer("weight", codes.to(torch.int32))
        self.output_scale = weight_scale.detach().flatten().double() * float(quantizer.scale)
        if self.output_scale.numel() == 1:  # one weight scale per tensor: a per-tensor scale
            self.output_scale = self.output_scale.reshape(())
        bias = layer.integer_bias()  # type: ignore[operator]
        qmin, qmax = quantizer.qrange
        fan_in = codes[0].numel()
        bound = fan_in * max(abs(qmin), abs(qmax)) * int(codes.abs().max())
        bound += int(bias.abs().max()) if bias is not None else 0
        self.accumulator = torch.int32 if bound <= INT32_MAX else torch.int64
        self.register_buffer("bias", None if bias is None else bias.to(self.accumulator))
        self.conv = isinstance(layer, nn.Conv2d)
        if self.conv:
            if layer.padding_mode != "zeros":  # type: ignore[union-attr]
                raise QuantError("integer inference supports zero padding only")
            self.stride, self.padding = layer.stride, layer.padding  # type: ignore[union-attr]
            self.dilation, self.groups = layer.dilation, layer.groups  # type: ignore[union-attr]

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        codes = self.input(values).to(self.accumulator)
        weight = self.weight.to(self.accumulator)
        if self.conv:
            acc = F.conv2d(
                codes, weight, None, self.stride, self.padding, self.dilation, self.groups
            )
        else:
            acc = F.linear(codes, weight)
        if self.bias is not None:
            acc = acc + _channel_view(self.bias, acc.dim())
        return acc


class IntegerAdd(nn.Module):
    """A quantized residual sum: both operands requantized to their codes, moved onto a
    common grid 2^SUM_FRACTION_BITS finer than the coarser operand's, added in int32."""

    def __init__(self, add: QuantAdd, main_scale: Scale, shortcut_scale: Scale) -> None:
        super().__init__()
        if main_scale is None or shortcut_scale is None:
            raise QuantError("a residual sum takes the float input: quantize it first")
        s_main, s_short = float(add.main_quantizer.scale), float(add.shortcut_quantizer.scale)
        self.main = _input_step(add.main_quantizer, main_scale)
        self.shortcut = _input_step(add.shortcut_quantizer, shortcut_scale)
        self.output_scale = torch.tensor(max(s_main, s_short) / 2**SUM_FRACTION_BITS).double()
        main_m, main_shift = dyadic(torch.tensor(s_main) / self.output_scale)
        short_m, short_shift = dyadic(torch.tensor(s_short) / self.output_scale)
        self.register_buffer("main_m", main_m)
        self.register_buffer("main_shift", main_shift)
        self.register_buffer("shortcut_m", short_m)
        self.register_buffer("shortcut_shift", short_shift)

    def forward(self, main: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        a = rescale(self.main(main), self.main_m, self.main_shift)
        b = rescale(self.shortcut(shortcut), self.shortcut_m, self.shortcut_shift)
        return (a + b).to(torch.int32)


class IntegerReLU(nn.Module):
    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return values.clamp_min(0)


class IntegerGlobalAvgPool(nn.Module):
    """Mean over H x W: an int64 sum divided by the pixel count, rounded half up; [N, C, 1, 1]."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        pixels = values.shape[-1] * values.shape[-2]
        total = values.to(torch.int64).sum(dim=(-2, -1), keepdim=True)
        return torch.div(total + pixels // 2, pixels, rounding_mode="floor").to(torch.int32)


class IntegerFlatten(nn.Module):
    """``torch.flatten(x, start_dim)``; a per-channel scale survives it only on 1x1 maps."""

    def __init__(self, start_dim: int, per_channel: bool) -> None:
        super().__init__()
        self.start_dim, self.per_channel = start_dim, per_channel

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if self.per_channel and values[0, 0].numel() != 1:
            raise QuantError("integer inference cannot flatten per-channel values of a map > 1x1")
        return torch.flatten(values, self.start_dim)


class Dequantize(nn.Module):
    """The last integer values -> float logits (the one dequantization, at the output)."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.double())

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return (values.double() * _channel_view(self.scale, values.dim())).float()


_PASS_THROUGH = (nn.Identity, nn.Dropout)
_FLOAT_SUMS = (operator.add, operator.iadd, torch.add)
_WHAT = "integer inference"


def _float_sum_error(node: fx.Node) -> QuantError:
    return QuantError(
        f"{_WHAT}: the residual sum {node.name} adds floats (the model was quantized with "
        "residual_bits = 0): rebuild it with residual_bits from 2 to 8"
    )


def integer_model(model: nn.Module) -> fx.GraphModule:
    """``model`` (quantized, BN folded, residual sums quantized) as integer-only ops.

    Input: the float images [N, C, H, W]; output: float logits [N, classes], dequantized from
    the last layer's int32 accumulator. Every module is named after the layer it computes
    (dots as underscores). Raises :class:`QuantError` naming the first node that cannot run
    on integers (a float layer, an unfolded BN, a float residual sum, ...).
    """
    graph = trace_quantized(model)
    lowered = fx.Graph()
    modules: dict[str, nn.Module] = {}
    env: dict[fx.Node, fx.Node] = {}
    scales: dict[fx.Node, Scale] = {}

    def emit(node: fx.Node, module: nn.Module, args: tuple[fx.Node, ...], scale: Scale) -> None:
        name = str(node.target).replace(".", "_") if node.op == "call_module" else node.name
        while name in modules:
            name += "_"
        modules[name] = module
        env[node] = lowered.call_module(name, tuple(env[a] for a in args))
        scales[node] = scale

    def same(node: fx.Node, source: fx.Node) -> None:
        env[node], scales[node] = env[source], scales[source]

    def integer_input(node: fx.Node) -> fx.Node:
        source = node.args[0]
        assert isinstance(source, fx.Node)
        if scales[source] is None:
            raise QuantError(f"{_WHAT}: {node.name} takes the float input before any quantizer")
        return source

    for node in graph.nodes:
        if node.op == "placeholder":
            env[node], scales[node] = lowered.placeholder(node.name), None
        elif node.op == "output":
            source = node.args[0]
            assert isinstance(source, fx.Node)
            emit(node, Dequantize(integer_scale(scales[integer_input(node)])), (source,), None)
            lowered.output(env[node])
        elif node.op == "call_module":
            module = node_module(model, node)
            if isinstance(module, QUANT_LAYERS):
                source = node.args[0]
                assert isinstance(source, fx.Node)
                layer = IntegerLayer(str(node.target), module, scales[source])
                emit(node, layer, (source,), layer.output_scale)
            elif isinstance(module, QuantAdd):
                main, shortcut = node.args
                assert isinstance(main, fx.Node) and isinstance(shortcut, fx.Node)
                add = IntegerAdd(module, scales[main], scales[shortcut])
                emit(node, add, (main, shortcut), add.output_scale)
            elif isinstance(module, ResidualAdd):
                raise _float_sum_error(node)
            elif isinstance(module, nn.ReLU):
                source = integer_input(node)
                emit(node, IntegerReLU(), (source,), scales[source])
            elif isinstance(module, _PASS_THROUGH):
                same(node, integer_input(node))
            elif isinstance(module, (PadShortcut, nn.MaxPool2d)):
                # Both are dtype-agnostic (slicing, zero padding, max); max commutes with a
                # positive scale, and padded channels are zeros whatever their scale.
                source = integer_input(node)
                scale = scales[source]
                if isinstance(module, PadShortcut) and scale is not None and scale.dim() == 1:
                    scale = F.pad(scale, (module.pad_front, module.pad_back), value=1.0)
                emit(node, module, (source,), scale)
            elif isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
                source = integer_input(node)
                emit(node, IntegerGlobalAvgPool(), (source,), scales[source])
            elif isinstance(module, nn.Flatten):
                source = integer_input(node)
                per_channel = scales[source] is not None and scales[source].dim() == 1  # type: ignore[union-attr]
                emit(node, IntegerFlatten(module.start_dim, per_channel), (source,), scales[source])
            elif isinstance(module, nn.BatchNorm2d):
                raise QuantError(f"{_WHAT}: {node.name} is a BatchNorm: quantize with fold_bn")
            else:
                raise unsupported(node, _WHAT, model)
        elif node.op == "call_function" and node.target in (F.relu, torch.relu):
            source = integer_input(node)
            emit(node, IntegerReLU(), (source,), scales[source])
        elif node.op == "call_function" and node.target is torch.flatten:
            source = integer_input(node)
            start_dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            per_channel = scales[source] is not None and scales[source].dim() == 1  # type: ignore[union-attr]
            emit(node, IntegerFlatten(int(start_dim), per_channel), (source,), scales[source])  # type: ignore[arg-type]
        elif node.op == "call_function" and node.target in _FLOAT_SUMS:
            raise _float_sum_error(node)
        else:
            raise unsupported(node, _WHAT, model)
    return fx.GraphModule(modules, lowered, class_name="IntegerModel")


def integer_scale(scale: Scale) -> torch.Tensor:
    """The scale of an integer value; the model output must not be the float input."""
    if scale is None:
        raise QuantError(f"{_WHAT}: the model output is the float input")
    return scale


def accumulator_widths(integer: fx.GraphModule) -> dict[str, str]:
    """Each integer layer's accumulator type ("int32" or "int64") by the layer's name."""
    return {
        module.layer_name: str(module.accumulator).removeprefix("torch.")
        for module in integer.children()
        if isinstance(module, IntegerLayer)
    }


def fraction_agreeing(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction (0..1) of rows of two logit tensors [N, classes] whose argmax agrees."""
    return float((a.argmax(1) == b.argmax(1)).float().mean()) if len(a) else math.nan
