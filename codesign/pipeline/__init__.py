"""Building models: load a checkpoint, apply a variant's steps (prune, fine-tune, PTQ, QAT)
through their registered handlers, save the result with its recipe."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from codesign.config import DEFAULT_CALIB_SAMPLES, QuantSpec, TrainSpec
from codesign.data import Dataset
from codesign.pipeline.models import (
    check_finite_model,
    layer_bits_rows,
    load_model,
    model_kwargs_for,
    save_model,
    top1,
)
from codesign.pipeline.steps import (
    HANDLERS,
    BuildContext,
    BuildInfo,
    FinetuneStep,
    PruneStep,
    PTQStep,
    QATStep,
    build,
    register_step,
    step_record,
    variant_steps,
)
from codesign.runtime import Runtime


def run_ptq(
    float_model: nn.Module,
    dataset: Dataset,
    spec: QuantSpec,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    seed: int = 0,
    runtime: Runtime | None = None,
) -> tuple[nn.Module, BuildInfo]:
    """Quantize a copy of ``float_model`` and calibrate it on ``calib_samples`` training
    images (a seeded class-stratified sample) where ``runtime`` says (default: the CPU);
    returns (quantized model, build info)."""
    ctx = BuildContext(
        float_model, dataset, seed=seed, calib_samples=calib_samples, runtime=runtime or Runtime()
    )
    return build(ctx, variant_steps(quant=spec))


def run_qat(
    float_model: nn.Module,
    dataset: Dataset,
    spec: QuantSpec,
    train_spec: TrainSpec,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    state_path: str | Path | None = None,
    progress: bool = True,
    runtime: Runtime | None = None,
) -> tuple[nn.Module, BuildInfo]:
    """PTQ initialisation, then LSQ fine-tuning distilled from ``float_model``; resumable
    from ``state_path``'s folder when given; where ``runtime`` says (default: the CPU)."""
    ctx = BuildContext(
        float_model,
        dataset,
        seed=train_spec.seed,
        calib_samples=calib_samples,
        state_dir=Path(state_path).parent if state_path is not None else None,
        progress=progress,
        runtime=runtime or Runtime(),
    )
    return build(ctx, variant_steps(quant=spec, qat=train_spec))


__all__ = [
    "HANDLERS",
    "BuildContext",
    "BuildInfo",
    "FinetuneStep",
    "PTQStep",
    "PruneStep",
    "QATStep",
    "build",
    "check_finite_model",
    "layer_bits_rows",
    "load_model",
    "model_kwargs_for",
    "register_step",
    "run_ptq",
    "run_qat",
    "save_model",
    "step_record",
    "top1",
    "variant_steps",
]
