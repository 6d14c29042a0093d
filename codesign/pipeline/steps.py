"""A variant is an ordered list of steps; each step is a frozen, versioned spec with one
registered handler (the torchao config -> handler registry, ``register_quantize_module_handler``).

``codesign prune`` / ``ptq`` / ``qat`` and recipe variants (``codesign run``, the search) all
build through :func:`build`, so the same settings give the same model through either door.
A step's ``version`` goes into every cache key: raising it when a handler's numbers change
rebuilds exactly the variants that use that step.

Order: prune (masks at the final level, one-shot) -> finetune (recovery, cubic ramp) -> ptq
(calibration) -> qat (LSQ fine-tuning of the calibrated model).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from codesign import distributed
from codesign.config import (
    LEARNED_ROUNDING_QAT_BELOW_BITS,
    QuantSpec,
    SparsitySpec,
    TrainSpec,
    check_progressive,
    to_dict,
)
from codesign.data import Dataset, evaluate, make_forward_loop
from codesign.data.subsets import rank_shard
from codesign.errors import ConfigError
from codesign.io import tensors_digest
from codesign.runtime import Runtime


class Step(Protocol):
    kind: ClassVar[str]
    version: ClassVar[int]


@dataclasses.dataclass(frozen=True)
class PruneStep:
    """Masks at the spec's final level (after the N:M permutation it asks for)."""

    kind: ClassVar[str] = "prune"
    version: ClassVar[int] = 1
    sparsity: SparsitySpec


@dataclasses.dataclass(frozen=True)
class FinetuneStep:
    """Recovery fine-tuning of the pruned model, distilled from the float model; the cubic
    schedule re-raises unstructured masks over it (``sparsity.prune_start`` ...)."""

    kind: ClassVar[str] = "finetune"
    version: ClassVar[int] = 1
    sparsity: SparsitySpec
    train: TrainSpec


@dataclasses.dataclass(frozen=True)
class PTQStep:
    """Quantize and calibrate. ``learned_rounding`` False keeps nearest rounding under
    ``auto`` (a QAT step after it re-learns the weights anyway)."""

    kind: ClassVar[str] = "ptq"
    quant: QuantSpec
    learned_rounding: bool = True

    # 2: ``auto`` runs gptq when only weights are below 8 bits and brecq when inputs are.
    version: ClassVar[int] = 2


@dataclasses.dataclass(frozen=True)
class QATStep:
    """LSQ fine-tuning of the calibrated model, distilled from the float model (progressive
    stages first where ``train`` is a QATSpec that has them)."""

    kind: ClassVar[str] = "qat"
    version: ClassVar[int] = 1
    train: TrainSpec


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What every step of a build may read: the float model (also the distillation teacher),
    the data, the seed of every training step, the calibration set size, where resumable
    training state lives (None: not resumable), whether to show progress, whether to
    record test top-1 after each step (the standalone commands report it), and where the
    work runs (:class:`~codesign.runtime.Runtime`: device, mixed precision, processes)."""

    float_model: nn.Module
    dataset: Dataset
    seed: int = 0
    calib_samples: int = 512
    state_dir: Path | None = None
    progress: bool = True
    evaluate_steps: bool = False
    runtime: Runtime = dataclasses.field(default_factory=Runtime)


@dataclasses.dataclass
class BuildInfo:
    """What a build measured on the way (seconds, subsets, per-step figures)."""

    train_seconds: float = 0.0
    calib_seconds: float = 0.0
    subsets: dict[str, Any] = dataclasses.field(default_factory=dict)
    pruning: dict[str, Any] = dataclasses.field(default_factory=dict)
    step_top1: dict[str, float] = dataclasses.field(default_factory=dict)
    # The float model a PTQ step quantized (pruned and fine-tuned where the variant says):
    # what QAT distils from, so QAT recovers the quantization error, not the pruning one.
    quantized_from: nn.Module | None = None
    # step_record of every step applied so far: what a training step's resumable state
    # depends on (see _state_key).
    applied_steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # What ``auto`` ran: the method, and with a calibration time limit every candidate's
    # validation figures and seconds (``codesign.quant.choice``).
    method_choice: dict[str, Any] | None = None


Handler = Callable[[nn.Module, Any, BuildContext, BuildInfo], nn.Module]
HANDLERS: dict[type, Handler] = {}


def register_step(step_type: type) -> Callable[[Handler], Handler]:
    """Register the one handler of ``step_type``: ``handler(model, step, ctx, info)`` returns
    the model after the step (in place or a new one)."""

    def wrap(handler: Handler) -> Handler:
        if step_type in HANDLERS:
            raise ValueError(f"{step_type.__name__} already has a handler")
        HANDLERS[step_type] = handler
        return handler

    return wrap


def step_record(step: Any) -> dict[str, Any]:
    """The JSON form of a step, with its kind and version (what cache keys hash)."""
    fields = {f.name: to_dict(getattr(step, f.name)) for f in dataclasses.fields(step)}
    return {"kind": step.kind, "version": step.version, **fields}


def build(ctx: BuildContext, steps: tuple[Any, ...]) -> tuple[nn.Module, BuildInfo]:
    """Apply ``steps`` in order to a copy of ``ctx.float_model`` on the runtime's device (the
    float model moves there too: it is the teacher); returns (model, info)."""
    torch.manual_seed(ctx.seed)
    ctx.float_model.to(ctx.runtime.torch_device)
    model = copy.deepcopy(ctx.float_model)
    # The float model is frozen as a teacher by the training loops; the student must train.
    model.requires_grad_(True)
    info = BuildInfo()
    for step in steps:
        handler = HANDLERS.get(type(step))
        if handler is None:
            raise ConfigError(f"no handler for step {type(step).__name__}")
        model = handler(model, step, ctx, info)
        info.applied_steps.append(step_record(step))
        if ctx.evaluate_steps:
            top1 = evaluate(model, ctx.dataset.test, device=ctx.runtime.torch_device)["top1"]
            info.step_top1[step.kind] = float(top1)
    model.eval()
    return model, info


def _state_key(step: Any, ctx: BuildContext, info: BuildInfo) -> str:
    """What a training step's resumable state depends on beyond its TrainSpec: the float
    model's weights, the steps applied before it and this one, the data, the seed and the
    calibration size. A killed W4A4 QAT re-run as W8A8 into the same folder must start over."""
    dataset = ctx.dataset
    data = {
        "name": dataset.name,
        "train": [list(dataset.train.shape), tensors_digest({"y": dataset.train.labels})],
        "test": list(dataset.test.shape),
        "validation": dataset.validation_info.digest if dataset.validation_info else None,
        "subset_seed": dataset.subset_seed,
        # Streamed training augments otherwise; preloaded keys stay as they were.
        **({"streamed": True} if dataset.streamed else {}),
    }
    key = {
        "steps": [*info.applied_steps, step_record(step)],
        "float_model": tensors_digest(ctx.float_model.state_dict()),
        "data": data,
        "seed": ctx.seed,
        "calib_samples": ctx.calib_samples,
    }
    return json.dumps(key, sort_keys=True)


def _calibration(ctx: BuildContext, info: BuildInfo) -> Callable[[nn.Module], None]:
    """The forward loop over this rank's share of the calibration set (all of it in one
    process); the calibration code reduces what each rank measures, so every rank computes
    from the whole set. The result records the whole set."""
    images, subset = ctx.dataset.calibration_set(ctx.calib_samples)
    info.subsets["calibration"] = subset.to_dict()
    runtime = ctx.runtime
    if runtime.distributed:
        images = images.select(rank_shard(images.labels, runtime.rank, runtime.world_size))
    return make_forward_loop(images, 256, device=runtime.torch_device)


@register_step(PruneStep)
def _prune(model: nn.Module, step: PruneStep, ctx: BuildContext, info: BuildInfo) -> nn.Module:
    from codesign.sparsity.apply import prune_model_

    # Only SparseGPT reads calibration images; magnitude masks record no calibration subset.
    calibration = _calibration(ctx, info) if step.sparsity.method == "sparsegpt" else None
    info.pruning.update(prune_model_(model, step.sparsity, calibration))
    # Every rank computed the same masks from the same weights and the Hessians of the whole
    # calibration set (summed over the ranks' shards); rank 0's are kept so no kernel's
    # rounding can make two ranks disagree.
    distributed.broadcast_state_(model)
    return model


def cubic_timing(step: FinetuneStep) -> Any:
    """The ``CubicTiming`` of a fine-tuning step's sparsity spec (where the ramp lies)."""
    from codesign.sparsity import CubicTiming

    spec = step.sparsity
    return CubicTiming(
        start_fraction=spec.prune_start,
        end_fraction=spec.prune_end,
        updates_per_epoch=spec.prune_updates,
    )


@register_step(FinetuneStep)
def _finetune(
    model: nn.Module, step: FinetuneStep, ctx: BuildContext, info: BuildInfo
) -> nn.Module:
    from codesign.sparsity import finetune_pruned

    spec = step.sparsity
    timing = cubic_timing(step)
    state = ctx.state_dir / "finetune_state.pt" if ctx.state_dir is not None else None
    history = finetune_pruned(
        model,
        spec,
        ctx.dataset,
        dataclasses.replace(step.train, seed=ctx.seed),
        teacher=ctx.float_model,
        timing=timing,
        state_path=state,
        state_key=_state_key(step, ctx, info) if state is not None else None,
        progress=ctx.progress,
        runtime=ctx.runtime,
    )
    info.train_seconds += history["train_seconds"]
    return model


@register_step(PTQStep)
def _ptq(model: nn.Module, step: PTQStep, ctx: BuildContext, info: BuildInfo) -> nn.Module:
    from codesign.quant import calibrate, quantize_

    info.quantized_from = model  # also the bias-correction reference
    calibration = _calibration(ctx, info)
    spec = step.quant
    if spec.method == "auto" and spec.calib_budget_s is not None and step.learned_rounding:
        quantized, seconds = _choose_ptq(model, spec, ctx, info, calibration)
    else:
        quantized = quantize_(copy.deepcopy(model), spec)
        calibrated = calibrate(
            quantized,
            calibration,
            spec,
            float_model=model,
            learned_rounding=step.learned_rounding,
        )
        seconds = calibrated["calib_seconds"]
        if spec.method == "auto":
            info.method_choice = {"chosen": calibrated["method"], "rule": "bit widths"}
    # Every rank calibrated on its shard with the statistics reduced over all shards, so every
    # rank computed the same scales and rounding (bit for bit on the CPU); rank 0's are
    # broadcast so no GPU kernel's rounding can make two ranks disagree.
    distributed.broadcast_state_(quantized)
    info.calib_seconds += seconds
    return quantized


def _choose_ptq(
    model: nn.Module,
    spec: QuantSpec,
    ctx: BuildContext,
    info: BuildInfo,
    calibration: Callable[[nn.Module], None],
) -> tuple[nn.Module, float]:
    """``auto`` with ``calib_budget_s``: the candidates that fit, scored on the validation
    split (never the test split); returns (best model, seconds of the whole choice)."""
    from codesign.data.loops import logits_of
    from codesign.quant import calibrate, quantize_
    from codesign.quant.choice import AUTO_CANDIDATES, choose_method, kl_from_float

    validation = ctx.dataset.validation
    if validation is None:
        raise ConfigError(
            "quant.calib_budget_s scores candidates on the validation split, and this data "
            "set has none: load it with a validation fraction or drop calib_budget_s"
        )
    started = time.perf_counter()
    device = ctx.runtime.torch_device
    labels = validation.labels.to(device)
    float_logits = logits_of(model, validation, device=device)

    def calibrate_with(method: str) -> tuple[nn.Module, dict[str, Any]]:
        candidate_spec = dataclasses.replace(spec, method=method, calib_budget_s=None)
        candidate = quantize_(copy.deepcopy(model), candidate_spec)
        return candidate, calibrate(candidate, calibration, candidate_spec, float_model=model)

    def score(candidate: nn.Module) -> dict[str, float]:
        logits = logits_of(candidate, validation, device=device)
        correct = (logits.argmax(1) == labels).sum()
        return {
            "validation_top1": 100.0 * float(correct) / len(validation),
            "validation_kl": kl_from_float(float_logits, logits),
        }

    quantized, record = choose_method(AUTO_CANDIDATES, calibrate_with, score, spec.calib_budget_s)
    info.method_choice = record
    return quantized, time.perf_counter() - started


@register_step(QATStep)
def _qat(model: nn.Module, step: QATStep, ctx: BuildContext, info: BuildInfo) -> nn.Module:
    from codesign.quant.qat import train_qat

    started = time.perf_counter()
    state = ctx.state_dir / "qat_state.pt" if ctx.state_dir is not None else None
    progressive = bool(getattr(step.train, "progressive", ()))
    train_qat(
        model,
        ctx.dataset,
        dataclasses.replace(step.train, seed=ctx.seed),
        teacher=info.quantized_from if info.quantized_from is not None else ctx.float_model,
        calibration=_calibration(ctx, info) if progressive else None,
        state_path=state,
        state_key=_state_key(step, ctx, info) if state is not None else None,
        progress=ctx.progress,
        runtime=ctx.runtime,
    )
    info.train_seconds += time.perf_counter() - started
    return model


def variant_steps(
    sparsity: SparsitySpec | None = None,
    finetune: TrainSpec | None = None,
    quant: QuantSpec | None = None,
    qat: TrainSpec | None = None,
) -> tuple[Any, ...]:
    """The ordered steps of a variant described by its tables (as recipes and the CLI do).

    Under ``auto``, PTQ before QAT keeps nearest rounding: fine-tuning moves the weights
    anyway, and learned rounding would cost most of the calibration time; where any layer
    goes below ``LEARNED_ROUNDING_QAT_BELOW_BITS`` (2-bit weights or activations, per-layer
    overrides included) it runs learned rounding, whose start QAT needs there. An explicit
    ``adaround`` or ``brecq`` is honoured.
    """
    if finetune is not None and sparsity is None:
        raise ConfigError("fine-tuning after pruning needs a sparsity spec")
    if qat is not None and quant is None:
        raise ConfigError("QAT needs a quant spec (it starts from the calibrated PTQ model)")
    if qat is not None and quant is not None:
        check_progressive(quant, qat)
    steps: list[Any] = []
    if sparsity is not None:
        steps.append(PruneStep(sparsity))
        if finetune is not None and finetune.epochs > 0:
            steps.append(FinetuneStep(sparsity, finetune))
    if quant is not None:
        if qat is not None and quant.calib_budget_s is not None:
            raise ConfigError(
                "quant.calib_budget_s chooses a PTQ method on the validation split; before "
                "QAT the PTQ step keeps nearest rounding: drop calib_budget_s or the QAT step"
            )
        rounding = True
        if qat is not None:
            rounding = quant.method in ("adaround", "brecq") or (
                quant.method == "auto" and quant.narrowest_bits < LEARNED_ROUNDING_QAT_BELOW_BITS
            )
        steps.append(PTQStep(quant, learned_rounding=rounding))
        if qat is not None:
            steps.append(QATStep(qat))
    return tuple(steps)
