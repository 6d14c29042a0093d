"""``quantize_`` (structure) and ``calibrate`` (ranges, bias correction, learned rounding).

quantize_(model, spec) swaps every Conv2d/Linear for its quantized twin (BN folded first when
the spec asks), with per-layer widths from ``keep_8bit`` and the ordered override list, and
every residual sum for one with quantized operands (``spec.residual_bits``).
calibrate(model, forward_loop, spec) sets every scale from real data, then corrects the bias
of every layer below 8-bit weights.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch
from torch import nn

from codesign import distributed
from codesign.config import LayerOverride, QuantSpec, resolve_overrides
from codesign.data.loops import ForwardLoop
from codesign.errors import QuantError
from codesign.models.residual import ResidualAdd
from codesign.quant.adaround import adaround_
from codesign.quant.brecq import BrecqConfig, brecq_, reconstruction_units
from codesign.quant.fold import fold_batchnorm_
from codesign.quant.gptq import gptq_
from codesign.quant.modules import (
    QUANT_LAYERS,
    QuantAdd,
    QuantConv2d,
    QuantLinear,
    to_quant_layer,
)
from codesign.quant.quantizers import ActQuantizer
from codesign.quant.sequential import LayerTimer


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Conv2d/Linear in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def quant_layers(model: nn.Module) -> list[tuple[str, QuantConv2d | QuantLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


def quant_adds(model: nn.Module) -> list[tuple[str, QuantAdd]]:
    """(name, module) of every residual sum with quantized operands, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantAdd)]


def act_quantizers(model: nn.Module) -> list[tuple[str, ActQuantizer]]:
    """Every activation quantizer: layer inputs and residual-sum operands, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ActQuantizer)]


def keep_8bit_patterns(keep: tuple[str, ...], layer_names: list[str]) -> list[LayerOverride]:
    """``first``/``last`` (the first conv, the last linear) or layer patterns -> 8-bit overrides."""
    overrides = []
    for item in keep:
        if item == "first":
            pattern = layer_names[0]
        elif item == "last":
            pattern = layer_names[-1]
        else:
            pattern = item
        overrides.append(LayerOverride(pattern, weight_bits=8, act_bits=8))
    return overrides


def layer_bits(model: nn.Module, spec: QuantSpec) -> dict[str, tuple[int, int] | None]:
    """Layer name -> (weight bits, input bits), or None for a layer the overrides skip."""
    names = [name for name, _ in quantizable_layers(model)]
    if not names:
        raise QuantError("the model has no Conv2d or Linear layer to quantize")
    overrides = keep_8bit_patterns(spec.keep_8bit, names) + list(spec.overrides)
    resolved = resolve_overrides(names, overrides)
    bits: dict[str, tuple[int, int] | None] = {}
    for name in names:
        override = resolved.get(name)
        if override is not None and override.skip:
            bits[name] = None
            continue
        weight = override.weight_bits if override and override.weight_bits else spec.weight_bits
        act = override.act_bits if override and override.act_bits else spec.act_bits
        bits[name] = (weight, act)
    return bits


def quantize_(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Fold BN (if ``spec.fold_bn``) and replace layers by quantized twins, in place.

    Scales start at 1: call :func:`calibrate` (or load a quantized checkpoint) next.
    """
    if quant_layers(model):
        raise QuantError("model is already quantized; start from the float model")
    bits = layer_bits(model, spec)
    if spec.fold_bn:
        fold_batchnorm_(model)
    for name, layer in quantizable_layers(model):
        if bits[name] is None:
            continue
        weight_bits, act_bits = bits[name]  # type: ignore[misc]
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        quantized = to_quant_layer(
            layer, weight_bits, act_bits, spec.per_channel, spec.quantize_bias
        )
        setattr(parent, child, quantized)
    if spec.residual_bits:
        sums = [n for n, m in model.named_modules() if isinstance(m, ResidualAdd)]
        for name in sums:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, QuantAdd(spec.residual_bits))
    return model


def set_act_mode(model: nn.Module, mode: str) -> None:
    for _, quantizer in act_quantizers(model):
        quantizer.mode = mode


def set_weight_quant(model: nn.Module, enabled: bool) -> None:
    for _, layer in quant_layers(model):
        layer.weight_quantizer.enabled = enabled


def range_method(method: str, bits: int) -> str:
    """The range estimator for one activation quantizer (and, but under ``gptq``, one weight
    quantizer): ``auto``, ``adaround``, ``brecq`` and ``gptq`` use min-max at 8 bits, MSE
    below."""
    if method not in ("auto", "adaround", "brecq", "gptq"):
        return method
    return "minmax" if bits >= 8 else "mse"


def weight_range_method(method: str, bits: int) -> str:
    """The range estimator for one weight quantizer. ``gptq`` keeps min-max at every width, as
    the GPTQ paper does: its error compensation absorbs rounding error but cannot bring back a
    clipped weight. On the ResNet-20 validation split at W4A8 (first and last layer at 8 bits),
    the mean KL divergence of the quantized from the float logits was 0.0039 with min-max and
    0.0051 with MSE weight ranges."""
    return "minmax" if method == "gptq" else range_method(method, bits)


def auto_method(model: nn.Module, learned_rounding: bool = True) -> str:
    """The method ``auto`` runs on a quantized model, by its widest gap below 8 bits.

    Inputs below 8 bits: ``brecq`` (block reconstruction with QDrop: activation error
    dominates, and only a method that sees the quantized activations while it rounds can
    compensate it); only weights below 8 bits: ``gptq`` (seconds, and on the ResNet-20
    validation split at W4A8 closer to the float logits than AdaRound); nothing below 8
    bits: ``adaround`` (min-max ranges, nothing to round). Without ``learned_rounding``
    (before QAT): ``adaround``'s ranges with nearest rounding. Measurements:
    docs/results/resnet20-quantization.md.
    """
    layers = [layer for _, layer in quant_layers(model)]
    if not learned_rounding:
        return "adaround"
    if any(layer.input_bits < 8 for layer in layers):
        return "brecq"
    if any(layer.weight_bits < 8 for layer in layers):
        return "gptq"
    return "adaround"


def learned_rounding_layers(
    model: nn.Module, spec: QuantSpec
) -> list[tuple[str, QuantConv2d | QuantLinear]]:
    """Layers whose weight rounding is learned: those below 8 bits under ``adaround``/``auto``.

    At 8 bits nearest rounding is already within noise of the float model, so the layers
    kept at 8 bits are not worth the calibration time. Below 8 bits, choosing each weight's
    rounding direction by the layer's output error beats rounding to nearest (Nagel et al.,
    "Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020); measured
    effects: docs/results/.
    """
    if spec.method not in ("auto", "adaround"):
        return []
    # Grouped/depthwise convs keep nearest rounding (and bias correction): the Gram-matrix
    # objective assumes one weight matrix shared by every output channel's input.
    return [
        (name, layer)
        for name, layer in quant_layers(model)
        if layer.weight_bits < 8 and getattr(layer, "groups", 1) == 1
    ]


def gptq_layers(model: nn.Module, spec: QuantSpec) -> list[tuple[str, QuantConv2d | QuantLinear]]:
    """Layers GPTQ rounds under ``gptq``: those below 8-bit weights (at 8 bits nearest
    rounding is within noise, as for AdaRound), groups=1 (the Hessian is of the full im2col
    input)."""
    if spec.method != "gptq":
        return []
    return [
        (name, layer)
        for name, layer in quant_layers(model)
        if layer.weight_bits < 8 and getattr(layer, "groups", 1) == 1
    ]


def calibrate(
    model: nn.Module,
    forward_loop: ForwardLoop,
    spec: QuantSpec,
    *,
    float_model: nn.Module | None = None,
    learned_rounding: bool = True,
    on_layer: LayerTimer | None = None,
    brecq_config: BrecqConfig | None = None,
) -> dict[str, Any]:
    """Set every weight and activation scale of a quantized model from data.

    1. Activation ranges: observe the inputs of every quantized layer on the float path
       (weights and activations unquantized) and estimate per-tensor scales (spec.method).
    2. Weight scales: per-channel (or per-tensor) min-max / percentile / MSE.
    3. ``adaround``: learned rounding (AdaRound) of layers below 8-bit weights; ``gptq``:
       GPTQ rounding of those layers (joint with their N:M masks); ``brecq``: block
       reconstruction (rounding and activation step sizes, ``codesign.quant.brecq``) of every
       residual block or layer below 8 bits; ``auto``: one of them by :func:`auto_method`.
    4. With ``bias_correction``: empirical bias correction (Nagel et al., "Data-Free
       Quantization", ICCV 2019) of the other layers below 8-bit weights. Learned-rounding
       and GPTQ layers are left out: their objective, the layer's output error, already
       includes the mean shift that bias correction removes, so they are not corrected twice.
    ``float_model``: the float reference (same structure before quantize_); needed for
    bias correction, AdaRound and BRECQ. ``learned_rounding=False`` skips AdaRound and BRECQ
    (QAT does: it re-learns the weights anyway); GPTQ, a few seconds, always runs under
    ``gptq``. Returns ``{"calib_seconds", "method", ...}`` (``method``: the one that ran, what
    ``auto`` chose) and each solver's per-layer (per-unit) report under its name
    (``"adaround"``, ``"gptq"``, ``"brecq"``); ``on_layer(name, seconds)`` is called as the
    solver finishes each layer or unit (propagation to it included); ``brecq_config``: the
    reconstruction's settings (default ``BrecqConfig()``).
    """
    started = time.perf_counter()
    layers = quant_layers(model)
    if not layers:
        raise QuantError("calibrate() needs a model prepared with quantize_()")
    if spec.method == "auto":
        spec = dataclasses.replace(spec, method=auto_method(model, learned_rounding))
    model.eval()
    set_weight_quant(model, False)
    set_act_mode(model, "observe")
    try:
        forward_loop(model)
        for name, quantizer in act_quantizers(model):
            try:
                quantizer.finish_observation(
                    range_method(spec.method, quantizer.bits), spec.percentile
                )
            except RuntimeError:
                raise QuantError(
                    f"{name} received no input during calibration: the forward loop "
                    "ran no data (empty calibration set?)"
                ) from None
    finally:
        set_weight_quant(model, True)
        set_act_mode(model, "quantize")
    with torch.no_grad():
        for _, layer in layers:
            layer.weight_quantizer.calibrate(
                layer.weight_before_quant(),
                weight_range_method(spec.method, layer.weight_bits),
                spec.percentile,
            )
    info: dict[str, Any] = {"method": spec.method}
    rounding_layers = learned_rounding_layers(model, spec) if learned_rounding else []
    reconstructing = spec.method == "brecq" and learned_rounding
    if (spec.bias_correction or rounding_layers or reconstructing) and float_model is None:
        raise QuantError(
            "bias correction and learned rounding need the float model: pass float_model=..."
        )
    solved_layers = gptq_layers(model, spec)
    if rounding_layers:
        info["adaround"] = adaround_(
            model, float_model, forward_loop, rounding_layers, on_layer=on_layer
        )
    if solved_layers:
        info["gptq"] = gptq_(model, forward_loop, solved_layers, on_layer=on_layer)
    reconstructed: list[str] = []
    if reconstructing:
        reconstructed = [name for _, unit in reconstruction_units(model) for name, _ in unit]
        info["brecq"] = brecq_(model, float_model, forward_loop, brecq_config, on_layer=on_layer)
    if spec.bias_correction:
        skip = {name for name, _ in rounding_layers + solved_layers} | set(reconstructed)
        info["bias_corrected"] = correct_bias_(model, float_model, forward_loop, skip=skip)
    info["calib_seconds"] = time.perf_counter() - started
    return info


@torch.no_grad()
def correct_bias_(
    model: nn.Module,
    float_model: nn.Module,
    forward_loop: ForwardLoop,
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Empirical bias correction (Nagel et al. 2019, sec. 4.2) of each layer's own error.

    For every layer with weights below 8 bits, the quantized layer and the float layer see the
    same float input (from one pass of the float model); the mean output difference per
    channel is subtracted from the bias. Correcting against the quantized upstream instead
    would fold activation-clipping errors of earlier layers into this layer's bias, a shift
    that depends on the input rather than on this layer's weights. At 8 bits the mean rounding
    error is negligible, so those layers are skipped.
    """
    targets = {
        name: layer
        for name, layer in quant_layers(model)
        if layer.weight_bits < 8 and layer.bias is not None and name not in skip
    }
    if not targets:
        return []
    reference = copy.deepcopy(float_model).eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        fold_batchnorm_(reference)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []

    def make_hook(name: str, quant_layer: nn.Module):
        def hook(
            float_layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
        ) -> None:
            difference = quant_layer(inputs[0]) - output
            dims = [0, *list(range(2, difference.dim()))]
            sums[name] = sums.get(name, 0) + difference.sum(dim=dims)
            counts[name] = counts.get(name, 0) + difference.numel() // difference.shape[1]

        return hook

    for name, layer in targets.items():
        handles.append(reference.get_submodule(name).register_forward_hook(make_hook(name, layer)))
    try:
        forward_loop(reference)
    finally:
        for handle in handles:
            handle.remove()
    for name, layer in targets.items():
        # Under torch.distributed: the sums and counts of every rank's calibration shard.
        total = distributed.sum_count(counts[name], sums[name].device)
        layer.bias.data.sub_(distributed.all_reduce_(sums[name]) / total)
    return list(targets)
