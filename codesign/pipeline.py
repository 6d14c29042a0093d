"""Workflows shared by the CLI and the Python API: load a model (re-applying the recipe a
checkpoint carries), quantize it, prune it, and save the result with its recipe."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codesign.config import DEFAULT_CALIB_SAMPLES, QuantSpec, SparsitySpec, TrainSpec
from codesign.data import Dataset, evaluate, make_forward_loop
from codesign.errors import CheckpointError
from codesign.io import checkpoint_meta, read_checkpoint, save_checkpoint
from codesign.models import create_model, extract_state_dict, infer_model, load_state_into
from codesign.quant import calibrate, quant_layers, quantize_
from codesign.quant.qat import train_qat


def load_model(
    checkpoint: str | Path, model_name: str | None = None, **model_kwargs: Any
) -> tuple[nn.Module, str, dict[str, Any]]:
    """Build the model a checkpoint belongs to and load it; returns (model, name, recipe).

    ``model_name`` defaults to what the checkpoint says (our checkpoints name their model; a
    foreign CIFAR ResNet is recognised from its layer names). Pruning and quantization named in
    a codesign checkpoint's recipe are re-applied before the weights are loaded.
    """
    raw = read_checkpoint(checkpoint)
    inferred, inferred_kwargs = infer_model(raw)
    name = model_name or inferred
    if name is None:
        raise CheckpointError(
            f"cannot tell which model {checkpoint} belongs to: pass --model (see list_models())"
        )
    kwargs = {**inferred_kwargs, **model_kwargs} if name == inferred else dict(model_kwargs)
    model = create_model(name, **kwargs)
    _, recipe, _ = checkpoint_meta(raw)
    if "sparsity" in recipe:
        from codesign.sparsity import prune_

        prune_(model, SparsitySpec.from_dict(recipe["sparsity"]))
    if "quant" in recipe:
        quantize_(model, QuantSpec.from_dict(recipe["quant"]))
    load_state_into(model, extract_state_dict(raw), str(checkpoint))
    model.eval()
    return model, name, recipe


def save_model(
    path: str | Path,
    model: nn.Module,
    name: str,
    recipe: dict[str, Any],
    model_kwargs: dict[str, Any],
) -> Path:
    return save_checkpoint(
        path,
        model.state_dict(),
        model_name=name,
        recipe=recipe,
        extra={"model_kwargs": model_kwargs},
    )


def model_kwargs_for(model: nn.Module) -> dict[str, Any]:
    """num_classes/in_channels of a model, so a checkpoint can rebuild it."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return {"num_classes": layers[-1].out_features, "in_channels": layers[0].in_channels}


def layer_bits_rows(model: nn.Module) -> list[dict[str, Any]]:
    return [
        {"name": name, "weight_bits": layer.weight_bits, "act_bits": layer.input_bits}
        for name, layer in quant_layers(model)
    ]


def run_ptq(
    float_model: nn.Module,
    dataset: Dataset,
    spec: QuantSpec,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    learned_rounding: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Quantize a copy of ``float_model`` and calibrate it on the first ``calib_samples``
    training images; returns (quantized model, calibration info)."""
    loop = make_forward_loop(dataset.train, 256, calib_samples)
    model = quantize_(copy.deepcopy(float_model), spec)
    info = calibrate(model, loop, spec, float_model=float_model, learned_rounding=learned_rounding)
    return model, info


def run_qat(
    float_model: nn.Module,
    dataset: Dataset,
    spec: QuantSpec,
    train_spec: TrainSpec,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    state_path: str | Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """PTQ initialisation, then LSQ fine-tuning with distillation from the float model.

    Under ``auto`` the initialisation keeps nearest rounding (MSE-clipped below 8 bits): LSQ
    fine-tuning moves the weights and scales anyway, so learned rounding's calibration time
    buys a start that training does not keep (measured: docs/results/). An explicit
    ``adaround`` is honoured.
    """
    started = time.perf_counter()
    model, info = run_ptq(
        float_model, dataset, spec, calib_samples, learned_rounding=spec.method == "adaround"
    )
    history = train_qat(
        model, dataset, train_spec, teacher=float_model, state_path=state_path, progress=progress
    )
    info.update(history)
    info["train_seconds"] = time.perf_counter() - started
    return model, info


def top1(model: nn.Module, dataset: Dataset) -> float:
    return float(evaluate(model, dataset.test)["top1"])


def check_finite_model(model: nn.Module) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{name} became NaN/Inf; lower the learning rate")
