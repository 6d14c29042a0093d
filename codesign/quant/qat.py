"""Quantization-aware training: LSQ step sizes (Esser et al. 2020) with the STE, started from
a calibrated PTQ model, BN already folded, and distilled from the float model.

Starting from the best PTQ model (rather than fresh scales) and distilling from the float
teacher are what the literature does when, as here, only a few thousand training images exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from codesign.config import TrainSpec
from codesign.data import Dataset
from codesign.quant.ptq import quant_adds, quant_layers
from codesign.runtime import Runtime
from codesign.train import train


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


def train_qat(
    model: nn.Module,
    dataset: Dataset,
    spec: TrainSpec,
    *,
    teacher: nn.Module | None = None,
    state_path: str | Path | None = None,
    state_key: str | None = None,
    progress: bool = True,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Fine-tune a calibrated quantized model in place with learned step sizes, where
    ``runtime`` says (see :func:`codesign.train.train`; quantizers compute in fp32 under
    ``amp="bf16"`` too)."""
    scales = enable_lsq_(model)
    scale_ids = {id(p) for p in scales}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in scale_ids]
    if teacher is not None:
        teacher.requires_grad_(False)
    try:
        history = train(
            model,
            dataset,
            spec,
            teacher=teacher,
            parameters=weights,
            extra_param_groups=[{"params": scales, "weight_decay": 0.0}],
            state_path=state_path,
            state_key=state_key,
            progress=progress,
            runtime=runtime,
        )
    finally:
        disable_lsq_(model)
    return history
