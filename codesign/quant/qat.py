"""Quantization-aware training: LSQ step sizes (Esser et al. 2020) with the STE, started from
a calibrated PTQ model, BN already folded, and distilled from the float model.

Starting from the best PTQ model (rather than fresh scales) and distilling from the float
teacher are what the literature does when, as here, only a few thousand training images exist.

Progressive QAT (``QATSpec.progressive``) trains wider stages first: each stage widens every
narrower quantizer to its width, re-estimates the ranges of the quantizers whose width changed
(MSE, on the float path, as calibration does) and trains its own epochs; the final widths come
last. Every stage keeps its own resumable state file until the whole QAT is done, so a killed
run resumes in the stage it was in, finished stages loaded rather than retrained.

Below 3 bits (any final quantizer) every learned step size is held within a factor 2 of where
its stage started it (:class:`StepBounds`); wider QAT trains them unbounded, as before.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codesign.config import QATStage, TrainSpec
from codesign.data import Dataset
from codesign.quant.ptq import act_quantizers, quant_adds, quant_layers, set_weight_quant
from codesign.quant.ranges import integer_range
from codesign.runtime import Runtime
from codesign.train import train

Widths = dict[str, tuple[int, int]]  # layer name -> (weight bits, input bits)


def _quantizers(model: nn.Module) -> list[nn.Module]:
    """Every weight and activation quantizer: each layer's, then the residual sums'."""
    quantizers: list[nn.Module] = []
    for _, layer in quant_layers(model):
        quantizers += [layer.weight_quantizer, layer.input_quantizer]
    for _, add in quant_adds(model):
        quantizers += [add.main_quantizer, add.shortcut_quantizer]
    return quantizers


def enable_lsq_(model: nn.Module) -> list[nn.Parameter]:
    """Make every quantizer's step size a trained parameter; returns those parameters."""
    scales = []
    for quantizer in _quantizers(model):
        quantizer.learn_scale = True
        quantizer.scale.requires_grad_(True)
        scales.append(quantizer.scale)
    return scales


def disable_lsq_(model: nn.Module) -> None:
    for quantizer in _quantizers(model):
        quantizer.learn_scale = False
        quantizer.scale.requires_grad_(False)
        quantizer.scale.data.abs_().clamp_(min=1e-12)


# Below this width (any final quantizer) learned step sizes are bounded around where each stage
# starts them (see StepBounds); at 3 bits and wider LSQ trains them unbounded.
BOUND_STEPS_BELOW_BITS = 3
# How far a bounded step size may move from its start, as a factor either way.
STEP_BOUND_RATIO = 2.0


class StepBounds:
    """Keeps learned step sizes within a factor ``ratio`` either way of where a stage started
    them: each step size ``s0`` (as calibrated, or re-estimated at a change of width) stays in
    ``[s0 / ratio, s0 * ratio]``; :meth:`apply_` clamps them in place (after optimizer steps).

    Why: with 2-bit weights and BN folded, nothing renormalises a layer's output, and LSQ's
    step-size gradient, scaled for the weights it quantizes, moves the small step sizes of
    the 8-bit first and last layers several-fold (measured on the CIFAR-10 subset, W2A2 from
    the nearest-rounded start: the first conv's weight steps x3 in two epochs at lr 1e-3, the
    classifier's input step x46 in two epochs at lr 5e-3, after which its inputs round to zero
    and the model sits at chance). A bound around the calibrated start plays the part of
    PACT's penalty on its clipping levels (Choi et al. 2018): the calibrated range is close to
    right, and training may refine it but not abandon it.
    """

    def __init__(self, scales: list[nn.Parameter], ratio: float = STEP_BOUND_RATIO) -> None:
        if not ratio >= 1.0:
            raise ValueError(f"step bound ratio must be at least 1, got {ratio}")
        self.scales = scales
        start = [p.detach().abs().clamp(min=1e-12) for p in scales]
        self.low = [s / ratio for s in start]
        self.high = [s * ratio for s in start]

    @torch.no_grad()
    def apply_(self, step: int = 0) -> None:
        """Clamp every step size into its bounds (``step`` is ignored: a training hook)."""
        for scale, low, high in zip(self.scales, self.low, self.high, strict=True):
            scale.abs_()
            torch.maximum(scale, low, out=scale)
            torch.minimum(scale, high, out=scale)


def bounds_step_sizes(widths: Mapping[str, tuple[int, int]]) -> bool:
    """Whether QAT to ``widths`` bounds its learned step sizes (any width below
    ``BOUND_STEPS_BELOW_BITS``)."""
    return any(min(pair) < BOUND_STEPS_BELOW_BITS for pair in widths.values())


def layer_widths(model: nn.Module) -> Widths:
    """Each quantized layer's (weight bits, input bits)."""
    return {name: (layer.weight_bits, layer.input_bits) for name, layer in quant_layers(model)}


def stage_widths(final: Mapping[str, tuple[int, int]], bits: int) -> Widths:
    """The widths of a progressive stage at ``bits``: every narrower width raised to it."""
    return {name: (max(w, bits), max(a, bits)) for name, (w, a) in final.items()}


def set_widths_(model: nn.Module, widths: Mapping[str, tuple[int, int]]) -> list[nn.Module]:
    """Set each layer's weight and input quantizer to ``widths[name]`` in place; returns the
    quantizers whose width changed (their scales are then stale)."""
    changed: list[nn.Module] = []
    for name, layer in quant_layers(model):
        weight_bits, input_bits = widths[name]
        weights, inputs = layer.weight_quantizer, layer.input_quantizer
        if weights.bits != weight_bits:
            weights.bits = weight_bits
            weights.qmin, weights.qmax = integer_range(weight_bits, signed=True)
            changed.append(weights)
        if inputs.bits != input_bits:
            inputs.bits = input_bits
            changed.append(inputs)
        layer.weight_bits, layer.input_bits = weight_bits, input_bits
    return changed


@torch.no_grad()
def recalibrate_(
    model: nn.Module, forward_loop: Callable[[nn.Module], None], quantizers: list[nn.Module]
) -> None:
    """MSE ranges for ``quantizers`` at their current widths: weight scales from the current
    weights, activation scales from their inputs observed on the float path (weights and the
    other activations unquantized), as calibration observes them."""
    chosen = {id(q) for q in quantizers}
    acts = [q for _, q in act_quantizers(model)]
    model.eval()
    set_weight_quant(model, False)
    for quantizer in acts:
        quantizer.mode = "observe" if id(quantizer) in chosen else "off"
    try:
        if any(id(q) in chosen for q in acts):
            forward_loop(model)
            for quantizer in acts:
                if id(quantizer) in chosen:
                    quantizer.finish_observation("mse")
    finally:
        set_weight_quant(model, True)
        for quantizer in acts:
            quantizer.mode = "quantize"
    for _, layer in quant_layers(model):
        if id(layer.weight_quantizer) in chosen:
            layer.weight_quantizer.calibrate(layer.weight_before_quant(), "mse")


def stage_state_path(path: Path, index: int) -> Path:
    """The resumable state of progressive stage ``index`` (1-based) beside ``path``."""
    return path.with_name(f"{path.stem}.stage{index}{path.suffix}")


def train_qat(
    model: nn.Module,
    dataset: Dataset,
    spec: TrainSpec,
    *,
    teacher: nn.Module | None = None,
    calibration: Callable[[nn.Module], None] | None = None,
    state_path: str | Path | None = None,
    state_key: str | None = None,
    progress: bool = True,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Fine-tune a calibrated quantized model in place with learned step sizes, where
    ``runtime`` says (see :func:`codesign.train.train`; quantizers compute in fp32 under
    ``amp="bf16"`` too). With ``spec.progressive`` (a :class:`~codesign.config.QATSpec`) the
    stages run first and ``calibration`` (a forward loop over calibration images) re-estimates
    the ranges at each change of width; the model ends at the widths it came with. Returns
    ``{"train_seconds", "epochs", "steps", "final_loss"}`` over all stages."""
    stages: tuple[QATStage, ...] = tuple(getattr(spec, "progressive", ()))
    if stages and calibration is None:
        raise ValueError("progressive QAT needs a calibration forward loop")
    final = layer_widths(model)
    plan: list[tuple[QATStage | None, TrainSpec]] = [
        (stage, dataclasses.replace(spec, epochs=stage.epochs, progressive=())) for stage in stages
    ]
    plan.append((None, dataclasses.replace(spec, progressive=()) if stages else spec))
    bounded = bounds_step_sizes(final)
    scales = enable_lsq_(model)
    scale_ids = {id(p) for p in scales}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in scale_ids]
    if teacher is not None:
        teacher.requires_grad_(False)
    totals: dict[str, Any] = {"train_seconds": 0.0, "epochs": 0, "steps": 0}
    try:
        for index, (stage, stage_spec) in enumerate(plan, start=1):
            widths = final if stage is None else stage_widths(final, stage.bits)
            changed = set_widths_(model, widths)
            if changed:
                assert calibration is not None
                recalibrate_(model, calibration, changed)
            path, key = state_path, state_key
            if stages:
                # Each stage resumes from its own keyed file; the key names the stage.
                key = json.dumps({"qat": state_key, "stage": index, "widths": widths})
                if state_path is not None and stage is not None:
                    path = stage_state_path(Path(state_path), index)
            # Bounds around this stage's start: a killed run resumes inside the same bounds.
            bounds = StepBounds(scales) if bounded else None
            history = train(
                model,
                dataset,
                stage_spec,
                teacher=teacher,
                on_step=bounds.apply_ if bounds is not None else None,
                parameters=weights,
                extra_param_groups=[{"params": scales, "weight_decay": 0.0}],
                state_path=path,
                state_key=key,
                progress=progress,
                runtime=runtime,
            )
            if bounds is not None:
                bounds.apply_()
            totals["train_seconds"] += history["train_seconds"]
            totals["epochs"] += history["epochs"]
            totals["steps"] += history["steps"]
            totals["final_loss"] = history["final_loss"]
    finally:
        set_widths_(model, final)
        disable_lsq_(model)
    return totals
