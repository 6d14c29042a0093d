"""Thin quantized layers that keep their module names.

``QuantConv2d``/``QuantLinear`` subclass the torch layers, so every tool that looks for
``nn.Conv2d`` (the hardware capture included) still finds them. The input fake-quant is the
named child ``input_quantizer``; the weight fake-quant is the last parametrization on
``weight`` (after any pruning mask, so pruned zeros stay exactly zero). They expose
``weight_bits``/``input_bits`` as plain ints, their integer codes and scales, and an integer
forward pass (integer codes, exact integer accumulation, then scales) that the tests compare
with the fake-quant output. With ``quantize_bias`` (the default) the bias is rounded to the
accumulator grid ``s_w[k] * s_x``, as integer hardware adds it (int32 codes). ``QuantAdd`` is a residual sum whose two operands are
fake-quantized by the named children ``main_quantizer`` and ``shortcut_quantizer``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from codesign.models.residual import ResidualAdd
from codesign.quant.quantizers import ActQuantizer, WeightQuantizer

INT32_MAX = 2**31 - 1


class QuantMixin:
    """Shared behaviour of QuantConv2d and QuantLinear (weight/input quantizer access)."""

    input_quantizer: ActQuantizer
    weight_bits: int
    input_bits: int
    quantize_bias: bool

    @property
    def weight_quantizer(self) -> WeightQuantizer:
        return self.parametrizations.weight[-1]  # type: ignore[attr-defined]

    def weight_before_quant(self) -> torch.Tensor:
        """The weight after every parametrization except the quantizer (i.e. after masks)."""
        chain = self.parametrizations.weight  # type: ignore[attr-defined]
        weight = chain.original
        for transform in list(chain)[:-1]:
            weight = transform(weight)
        return weight

    def set_weight_before_quant(self, value: torch.Tensor) -> None:
        """Overwrite the stored float weight (used to bake learned rounding)."""
        chain = self.parametrizations.weight  # type: ignore[attr-defined]
        if len(chain) > 1:
            # Mask parametrizations are element-wise multiplications: storing the masked value
            # keeps the effective weight identical.
            value = value * (self.weight_before_quant() != 0)
        chain.original.data.copy_(value)

    def integer_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes int32 [K, ...], scale [K, 1, ...]) with effective weight = codes * scale."""
        with torch.no_grad():
            quantizer = self.weight_quantizer
            return quantizer.integer_codes(self.weight_before_quant()), quantizer.scale.detach()

    def bias_grid(self) -> torch.Tensor:
        """The accumulator's scale per output channel, s_w[k] * s_x: float64 [K] (or [1])."""
        weight_scale = self.weight_quantizer.scale.detach().flatten().double()
        return weight_scale * float(self.input_quantizer.scale.detach())

    def integer_bias(self) -> torch.Tensor | None:
        """The bias as int64 codes on the accumulator grid [K] (None without a bias)."""
        bias = self.bias  # type: ignore[attr-defined]
        if bias is None:
            return None
        return torch.round(bias.detach().double() / self.bias_grid()).long()

    def effective_bias(self) -> torch.Tensor | None:
        """The bias the forward adds: rounded to the accumulator grid (straight-through) when
        ``quantize_bias`` and both quantizers are active, else the float bias."""
        bias = self.bias  # type: ignore[attr-defined]
        quantizing = self.input_quantizer.mode == "quantize" and self.weight_quantizer.enabled
        if bias is None or not self.quantize_bias or not quantizing:
            return bias
        # float64: a float32 quotient of up to ~1e6 would misround codes near a half
        grid = self.bias_grid()
        rounded = (torch.round(bias.detach().double() / grid) * grid).to(bias.dtype)
        return bias + (rounded - bias).detach()

    def _integer_accumulate(self, x_codes: torch.Tensor, w_codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer computed the way integer hardware does it.

        Input codes (int32) times weight codes (int32), accumulated exactly (float64 holds
        every integer below 2^53; the result is checked to fit int32), then rescaled by
        scale_w[k] * scale_x, plus the bias the forward adds. Output shape as the float layer's.
        """
        x_codes = self.input_quantizer.integer_codes(x)
        w_codes, w_scale = self.integer_weight()
        accumulator = self._integer_accumulate(x_codes.double(), w_codes.double())
        if accumulator.abs().max() > INT32_MAX:
            raise OverflowError("accumulator exceeds int32")
        channel_scale = w_scale.flatten().double() * float(self.input_quantizer.scale)
        shape = (1, -1) + (1,) * (accumulator.dim() - 2)
        out = accumulator * channel_scale.view(shape)
        bias = self.effective_bias()
        if bias is not None:
            out = out + bias.double().view(shape)
        return out.float()


class QuantConv2d(QuantMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.input_quantizer(x), self.weight, self.effective_bias())

    def _integer_accumulate(self, x_codes: torch.Tensor, w_codes: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x_codes, w_codes, None, self.stride, self.padding, self.dilation, self.groups
        )


class QuantLinear(QuantMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.weight, self.effective_bias())

    def _integer_accumulate(self, x_codes: torch.Tensor, w_codes: torch.Tensor) -> torch.Tensor:
        return F.linear(x_codes, w_codes)


QUANT_LAYERS = (QuantConv2d, QuantLinear)


class QuantAdd(ResidualAdd):
    """A residual sum of two fake-quantized operands, each per tensor at ``bits``.

    Integer hardware adds integers: the main branch (a conv output, requantized from its
    accumulator) and the shortcut (a stored activation) each have a scale and an integer
    grid, unsigned where calibration saw no negative value. The sum itself is not rounded
    here: its consumers (the next layers' input quantizers) quantize it.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.main_quantizer = ActQuantizer(bits)
        self.shortcut_quantizer = ActQuantizer(bits)

    def forward(self, main: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return self.main_quantizer(main) + self.shortcut_quantizer(shortcut)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def to_quant_layer(
    layer: nn.Conv2d | nn.Linear,
    weight_bits: int,
    input_bits: int,
    per_channel: bool,
    quantize_bias: bool = True,
) -> QuantConv2d | QuantLinear:
    """A quantized copy of ``layer``: same weights, bias and weight parametrizations (masks),
    then the weight quantizer appended, and an input quantizer child; ``quantize_bias``: the
    bias is added on the accumulator grid."""
    if isinstance(layer, nn.Conv2d):
        new: QuantConv2d | QuantLinear = QuantConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,  # type: ignore[arg-type]
            layer.stride,  # type: ignore[arg-type]
            layer.padding,  # type: ignore[arg-type]
            layer.dilation,  # type: ignore[arg-type]
            layer.groups,
            layer.bias is not None,
            layer.padding_mode,
        )
    else:
        new = QuantLinear(layer.in_features, layer.out_features, layer.bias is not None)
    existing = []
    if parametrize.is_parametrized(layer, "weight"):
        chain = layer.parametrizations.weight
        new.weight.data.copy_(chain.original.detach())
        existing = list(chain)
    else:
        new.weight.data.copy_(layer.weight.detach())
    if layer.bias is not None:
        new.bias.data.copy_(layer.bias.detach())  # type: ignore[union-attr]
    for transform in existing:
        parametrize.register_parametrization(new, "weight", transform, unsafe=True)
    parametrize.register_parametrization(
        new, "weight", WeightQuantizer(new.weight.shape, weight_bits, per_channel), unsafe=True
    )
    new.input_quantizer = ActQuantizer(input_bits)
    new.weight_bits = weight_bits
    new.input_bits = input_bits
    new.quantize_bias = quantize_bias
    return new.to(layer.weight.device)
