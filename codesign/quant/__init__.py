"""Quantization: quantizers, quantized layers, BN folding, PTQ and QAT."""

from codesign.quant.fold import fold_batchnorm_
from codesign.quant.modules import QuantConv2d, QuantLinear
from codesign.quant.ptq import calibrate, quant_layers, quantize_
from codesign.quant.quantizers import ActQuantizer, WeightQuantizer

__all__ = [
    "ActQuantizer",
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantizer",
    "calibrate",
    "fold_batchnorm_",
    "quant_layers",
    "quantize_",
]
