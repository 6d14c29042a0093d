"""``sparsity_report(model)``: weight sparsity measured from the effective weights.

Measured, not declared: zeros are counted on ``module.weight`` as the forward pass sees it
(after the mask and any quantizer), so the figures hold for what would be exported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from codesign.sparsity.masks import NMPattern, nm_compliant
from codesign.sparsity.prune import prunable_layers, weight_masks


@torch.no_grad()
def sparsity_report(model: nn.Module) -> dict[str, Any]:
    """Per-layer and total weight sparsity of every Conv2d/Linear.

    Returns ``{"sparsity", "zeros", "params", "pruned_sparsity", "layers": [{"name",
    "pattern", "sparsity", "zeros", "params", "nm_compliant"}]}``. ``pattern`` is "2:4"-style,
    "unstructured" or "dense"; ``nm_compliant`` (N:M layers only, else None) is True when every
    group of M consecutive input channels keeps at most N nonzeros. ``sparsity`` is over all
    Conv2d/Linear weights, ``pruned_sparsity`` over the pruned layers only.

    >>> sparsity_report(nn.Sequential(nn.Linear(4, 2)))["layers"][0]["pattern"]
    'dense'
    """
    masks = weight_masks(model)
    layers = []
    zeros = params = pruned_zeros = pruned_params = 0
    for name, module in prunable_layers(model).items():
        weight = module.weight
        layer_zeros, layer_params = int((weight == 0).sum()), weight.numel()
        mask = masks.get(name)
        pattern = mask.pattern if mask is not None else None
        compliant = (
            nm_compliant(weight, pattern.n, pattern.m) if isinstance(pattern, NMPattern) else None
        )
        layers.append(
            {
                "name": name,
                "pattern": "dense" if pattern is None else str(pattern),
                "sparsity": layer_zeros / layer_params,
                "zeros": layer_zeros,
                "params": layer_params,
                "nm_compliant": compliant,
            }
        )
        zeros, params = zeros + layer_zeros, params + layer_params
        if mask is not None:
            pruned_zeros, pruned_params = pruned_zeros + layer_zeros, pruned_params + layer_params
    return {
        "sparsity": zeros / params if params else 0.0,
        "zeros": zeros,
        "params": params,
        "pruned_sparsity": pruned_zeros / pruned_params if pruned_params else 0.0,
        "layers": layers,
    }


_ORIGINAL = ".parametrizations.weight.original"
_MASK = ".parametrizations.weight.0.mask"


def masked_weights_from_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Effective (masked) weights of every pruned layer in a saved ``state_dict``, by layer.

    Reads ``<layer>.parametrizations.weight.original`` and its first parametrization's
    ``mask`` buffer, so a checkpoint can be checked (e.g. N:M compliance with
    ``nm_compliant``) without building the model. Quantizers that follow the mask are not
    applied: they keep zeros at zero.

    >>> state = {"fc" + _ORIGINAL: torch.ones(1, 4), "fc" + _MASK: torch.tensor([[True, False] * 2])}
    >>> masked_weights_from_state_dict(state)["fc"].tolist()
    [[1.0, 0.0, 1.0, 0.0]]
    """
    layers = {}
    for key, mask in state.items():
        if key.endswith(_MASK):
            name = key[: -len(_MASK)]
            layers[name] = torch.where(mask.bool(), state[name + _ORIGINAL], 0.0)
    return layers
