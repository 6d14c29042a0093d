"""Load weights from our checkpoints and from foreign ones, with exact key/shape checks.

Foreign checkpoints come with quirks: a nested ``state_dict``/``model`` entry, a ``module.``
prefix from ``nn.DataParallel``, tensors saved on CUDA. All are handled here; anything that
still does not fit the model fails with the missing/unexpected keys or the first shape
mismatch named, because a silently half-loaded network is the worst outcome.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from codesign.errors import CheckpointError
from codesign.io import checkpoint_meta

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def extract_state_dict(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensor dict inside a raw checkpoint object, with ``module.`` prefixes removed."""
    if obj.get("format") == "codesign-checkpoint-v1":
        state = obj["state_dict"]
    else:
        state = obj
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"no tensors found in checkpoint (top-level keys: {', '.join(list(obj)[:8])}); "
            "expected a state_dict or a dict with a 'state_dict' entry"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def infer_model(obj: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Guess (model name, kwargs) from a checkpoint; (None, {}) where it cannot tell.

    Our checkpoints name their model. A foreign CIFAR ResNet is recognised by its layer names:
    ``layerS.B.conv1`` with B in 0..n-1 gives depth 6n + 2, and ``linear.weight`` the classes.
    A torchvision ResNet (``layer4`` and ``fc``) by its blocks (:func:`infer_torchvision_resnet`).
    """
    name, _, extra = checkpoint_meta(obj)
    if name is not None:
        return name, dict(extra.get("model_kwargs", {}))
    state = extract_state_dict(obj)
    if "fc.weight" in state and "layer4.0.conv1.weight" in state:
        return infer_torchvision_resnet(state)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer1\.(\d+)\.conv1\.", k))}
    if "linear.weight" in state and blocks and "layer4.0.conv1.weight" not in state:
        depth = 6 * (max(blocks) + 1) + 2
        kwargs = {
            "num_classes": int(state["linear.weight"].shape[0]),
            "in_channels": int(state["conv1.weight"].shape[1]),
        }
        return f"resnet{depth}", kwargs
    return None, {}


# (block type, blocks per stage) of the torchvision ResNets the registry builds (He et al.
# 2016, Table 1); torchvision's ResNet-101/152 and wide/ResNeXt variants are not registered.
TORCHVISION_RESNETS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
}
# Stem and first-stage width of the plain ResNets (wide ResNets double the bottleneck width).
_RESNET_WIDTH = 64


def infer_torchvision_resnet(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """(name, kwargs) of a torchvision-format ResNet state dict: Bottleneck blocks have a
    ``conv3``, BasicBlocks do not; the blocks per stage count ``layerS.B.conv1``; the classes
    come from ``fc.weight`` (a checkpoint fine-tuned to 7 classes loads as 7 classes); a 3x3
    stem conv is the CIFAR stem. A layout the registry does not build is a CheckpointError."""
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    counts = tuple(
        len({k.split(".")[1] for k in state if k.startswith(f"layer{stage}.") and ".conv1." in k})
        for stage in (1, 2, 3, 4)
    )
    name = TORCHVISION_RESNETS.get((block, counts))
    width = int(state["layer1.0.conv1.weight"].shape[0])
    if name is None or (block == "bottleneck" and width != _RESNET_WIDTH):
        known = ", ".join(f"{n} ({b}, {list(c)})" for (b, c), n in TORCHVISION_RESNETS.items())
        raise CheckpointError(
            f"a torchvision ResNet checkpoint with {block} blocks {list(counts)} per stage and "
            f"first-stage width {width} is not a registered model; registered: {known}"
        )
    stem = state["conv1.weight"]
    kwargs: dict[str, Any] = {
        "num_classes": int(state["fc.weight"].shape[0]),
        "in_channels": int(stem.shape[1]),
    }
    if tuple(stem.shape[2:]) == (3, 3):
        kwargs["cifar_stem"] = True
    return name, kwargs


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` after checking keys and shapes match exactly."""
    expected = model.state_dict()
    # BatchNorm's step counter appeared in PyTorch 0.4.1; older checkpoints lack it and it
    # does not affect inference, so it alone may be missing.
    state = dict(state)
    for key, tensor in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = tensor
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_listing(unexpected)}")
        raise CheckpointError(
            f"checkpoint {source} does not fit {type(model).__name__}: {'; '.join(parts)} "
            "(wrong --model for this checkpoint? give the model it was saved from, or leave "
            "--model out for a checkpoint that names it)"
        )
    for key, tensor in expected.items():
        if tensor.shape != state[key].shape:
            raise CheckpointError(
                f"checkpoint {source} does not fit the model: {key} has shape "
                f"{tuple(state[key].shape)} in the checkpoint but {tuple(tensor.shape)} in the "
                "model (wrong --model or num_classes? give the ones it was saved with)"
            )
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all() and tensor.is_floating_point():
            raise CheckpointError(
                f"checkpoint {source}: {key} contains NaN or Inf values; restore it or rebuild it"
            )
    model.load_state_dict(state, strict=True)


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown
