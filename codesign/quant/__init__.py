"""Quantization: quantizers, quantized layers and residual sums, BN folding, PTQ and QAT,
and the integer-only model of a quantized one."""

from codesign.quant.fold import fold_batchnorm_
from codesign.quant.integer import integer_model
from codesign.quant.modules import QuantAdd, QuantConv2d, QuantLinear
from codesign.quant.ptq import calibrate, quant_adds, quant_layers, quantize_
from codesign.quant.quantizers import ActQuantizer, WeightQuantizer

__all__ = [
    "ActQuantizer",
    "QuantAdd",
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantizer",
    "calibrate",
    "fold_batchnorm_",
    "integer_model",
    "quant_adds",
    "quant_layers",
    "quantize_",
]
