"""Models in and out: load a checkpoint (re-applying the recipe it carries), save a model
with its recipe, and the small per-model summaries results record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from codesign.config import QuantSpec, SparsitySpec
from codesign.data import Dataset, evaluate
from codesign.errors import CheckpointError
from codesign.io import checkpoint_meta, read_checkpoint, save_checkpoint
from codesign.models import create_model, extract_state_dict, infer_model, load_state_into
from codesign.quant import quant_layers, quantize_


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
    where = f"checkpoint {checkpoint}: recipe"
    if "sparsity" in recipe:
        from codesign.sparsity import prune_

        prune_(model, SparsitySpec.from_dict(recipe["sparsity"], f"{where}.sparsity"))
    if "quant" in recipe:
        # A checkpoint written before residual sums and biases were quantized names neither
        # residual_bits nor quantize_bias: its model added both in float, so it is rebuilt
        # that way (its state has no scales for the sums).
        quant = {"residual_bits": 0, "quantize_bias": False, **recipe["quant"]}
        quantize_(model, QuantSpec.from_dict(quant, f"{where}.quant"))
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


def top1(model: nn.Module, dataset: Dataset) -> float:
    return float(evaluate(model, dataset.test)["top1"])


def check_finite_model(model: nn.Module) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{name} became NaN/Inf; lower the learning rate")
