"""``prune_(model, spec)``: attach pruning masks to weights as parametrizations.

Each pruned Conv2d/Linear gets a ``WeightMask`` as the FIRST parametrization of ``weight``:
``module.weight`` = mask applied to ``module.parametrizations.weight.original``. Why a
parametrization: the mask is a buffer (saved in ``state_dict``), the optimizer updates only the
original tensor (a masked weight's gradient is exactly 0 and the mask is re-applied on every
read), and the quantizer appends its weight fake-quant after the mask, so it sees exact zeros
and keeps them (symmetric quantization maps 0 to 0).

Which layers: every Conv2d/Linear whose name matches none of ``spec.exclude`` (by default the
first conv and the classifier, which hold few weights and cost the most accuracy), then the
ordered ``spec.overrides`` (last match wins; a pattern matching no layer is an error). An
override with an explicit ``sparsity`` (or ``skip``) decides even for an excluded layer.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

from codesign.config import LayerOverride, SparsitySpec, resolve_overrides
from codesign.errors import SparsityError
from codesign.sparsity.masks import (
    NMPattern,
    Pattern,
    Unstructured,
    global_magnitude_masks,
    lamp_masks,
    magnitude_mask,
    nm_mask,
    parse_pattern,
)

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


class SparsityWarning(UserWarning):
    """A layer was left dense (e.g. its input channels do not divide into N:M groups)."""


class WeightMask(nn.Module):
    """Parametrization ``weight -> where(mask, weight, 0)``; ``mask`` is a bool buffer.

    ``pattern`` (NMPattern or Unstructured at the layer's final level) and ``scope``
    ("layer", "global" or "lamp") tell ``update_masks_`` how to re-compute the mask.
    """

    def __init__(self, mask: torch.Tensor, pattern: Pattern, scope: str = "layer") -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))
        self.pattern = pattern
        self.scope = scope

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # where, not multiply: a masked weight reads exactly +0.0 whatever the original holds.
        return torch.where(self.mask, weight, weight.new_zeros(()))

    def extra_repr(self) -> str:
        density = float(self.mask.float().mean()) if self.mask.numel() else 1.0
        return f"pattern={self.pattern}, scope={self.scope}, sparsity={1 - density:.4f}"


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One layer to prune: its name, module, pattern and scope."""

    name: str
    module: nn.Module
    pattern: Pattern
    scope: str


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All Conv2d/Linear submodules by qualified name (pruned or not)."""
    return {n: m for n, m in model.named_modules() if n and isinstance(m, PRUNABLE_TYPES)}


def _layer_pattern(
    name: str, spec: SparsitySpec, default: Pattern | None, override: LayerOverride | None
) -> tuple[Pattern | None, str]:
    """(pattern or None for dense, scope) of one layer after exclude and overrides."""
    excluded = any(fnmatch.fnmatchcase(name, pattern) for pattern in spec.exclude)
    if override is not None and override.skip:
        return None, "layer"
    if override is not None and override.sparsity is not None:
        # An explicit per-layer level is layer-wise even under a global spec.
        return parse_pattern(override.sparsity), "layer"
    return (None if excluded else default), spec.scope


def plan_pruning(model: nn.Module, spec: SparsitySpec) -> list[LayerPlan]:
    """Decide which layers get which pattern, checking everything before any change is made."""
    default = parse_pattern(spec.sparsity)
    layers = prunable_layers(model)
    if not layers:
        raise SparsityError(f"{type(model).__name__} has no Conv2d or Linear layer to prune")
    overrides = resolve_overrides(list(layers), spec.overrides)
    plans: list[LayerPlan] = []
    for name, module in layers.items():
        pattern, scope = _layer_pattern(name, spec, default, overrides.get(name))
        if pattern is None:
            continue
        if parametrize.is_parametrized(module, "weight"):
            first = module.parametrizations["weight"][0]
            what = (
                "is already pruned"
                if isinstance(first, WeightMask)
                else (f"already has a {type(first).__name__} parametrization on its weight")
            )
            raise SparsityError(
                f"layer {name!r} {what}: prune before quantizing (the mask must be the first "
                "parametrization), or call remove_pruning(model) before pruning again"
            )
        channels = module.weight.shape[1]
        if isinstance(pattern, NMPattern) and channels % pattern.m:
            message = (
                f"layer {name!r} has {channels} input channels, not a multiple of M={pattern.m}, "
                f"so {pattern} cannot apply"
            )
            if spec.strict:
                raise SparsityError(
                    f"{message}: exclude it or add an override with sparsity 'dense'"
                )
            warnings.warn(f"{message}; it stays dense", SparsityWarning, stacklevel=3)
            continue
        plans.append(LayerPlan(name, module, pattern, scope))
    if default is not None and not plans:
        raise SparsityError(
            f"no layer left to prune with {spec.sparsity!r}: every Conv2d/Linear is excluded "
            f"(exclude={list(spec.exclude)}) or skipped; relax the excludes or overrides"
        )
    return plans


def _compute_masks(
    weights: list[torch.Tensor], patterns: list[Pattern], scopes: list[str], target_fraction: float
) -> list[torch.Tensor]:
    """Masks for layers given their (masked) weights; unstructured levels scaled by the fraction."""
    if not 0.0 <= target_fraction <= 1.0:
        raise SparsityError(f"target_fraction {target_fraction} must lie in [0, 1]")
    masks: list[torch.Tensor | None] = [None] * len(weights)
    shared_scopes: dict[str, list[int]] = {"global": [], "lamp": []}
    for i, (weight, pattern, scope) in enumerate(zip(weights, patterns, scopes, strict=True)):
        if isinstance(pattern, NMPattern):
            masks[i] = nm_mask(weight, pattern.n, pattern.m)
        elif scope in shared_scopes:
            shared_scopes[scope].append(i)
        else:
            masks[i] = magnitude_mask(weight, pattern.sparsity * target_fraction)
    for scope, indices in shared_scopes.items():
        if not indices:
            continue
        # Every layer of a shared scope takes the spec's level (explicit overrides are
        # layer-wise).
        level = patterns[indices[0]].sparsity * target_fraction
        chosen = [weights[i] for i in indices]
        shared = (
            global_magnitude_masks(chosen, level)
            if scope == "global"
            else lamp_masks(chosen, level)
        )
        for i, mask in zip(indices, shared, strict=True):
            masks[i] = mask
    return [m for m in masks if m is not None]


def prune_(model: nn.Module, spec: SparsitySpec, *, target_fraction: float = 1.0) -> nn.Module:
    """Prune ``model`` in place by magnitude, attaching a ``WeightMask`` to each chosen weight.

    ``target_fraction`` scales every unstructured level (0 attaches all-ones masks for a
    gradual schedule to raise later with ``update_masks_``); N:M layers take their pattern at
    once. Raises SparsityError for a bad pattern/level, a strict N:M layer that does not
    divide, or an already parametrized weight; nothing is changed when it raises.
    """
    plans = plan_pruning(model, spec)
    weights = [plan.module.weight.detach() for plan in plans]
    masks = _compute_masks(
        weights, [p.pattern for p in plans], [p.scope for p in plans], target_fraction
    )
    for plan, mask in zip(plans, masks, strict=True):
        parametrize.register_parametrization(
            plan.module, "weight", WeightMask(mask, plan.pattern, plan.scope)
        )
    return model


def weight_masks(model: nn.Module) -> dict[str, WeightMask]:
    """The ``WeightMask`` of every pruned layer, by layer name."""
    found = {}
    for name, module in model.named_modules():
        if name and parametrize.is_parametrized(module, "weight"):
            first = module.parametrizations["weight"][0]
            if isinstance(first, WeightMask):
                found[name] = first
    return found


def masked_weight(module: nn.Module) -> torch.Tensor:
    """The weight after the mask only (before any quantizer that follows it)."""
    plist = module.parametrizations["weight"]
    return plist[0](plist.original).detach()


@torch.no_grad()
def update_masks_(model: nn.Module, target_fraction: float = 1.0) -> nn.Module:
    """Re-compute unstructured masks at ``target_fraction`` of each layer's final level.

    Magnitudes are read from the masked weights, so a removed weight (0) stays removed and
    levels only grow, as in Zhu & Gupta's gradual pruning. N:M masks are kept as they are.
    """
    masks = weight_masks(model)
    if not masks:
        raise SparsityError("model has no pruning masks: call prune_(model, spec) first")
    modules = dict(model.named_modules())
    names = [n for n, m in masks.items() if isinstance(m.pattern, Unstructured)]
    weights = [masked_weight(modules[n]) for n in names]
    new = _compute_masks(
        weights, [masks[n].pattern for n in names], [masks[n].scope for n in names], target_fraction
    )
    for name, mask in zip(names, new, strict=True):
        masks[name].mask.copy_(mask)
    return model


@torch.no_grad()
def remove_pruning(model: nn.Module) -> nn.Module:
    """Bake every mask into its weight and drop the mask parametrization.

    A layer whose mask is the only parametrization gets a plain ``weight`` Parameter again
    (the same object, so optimizers stay valid). Where a quantizer follows the mask, the
    zeros are written into the original weight and the quantizer stays in place.
    """
    for name in weight_masks(model):
        module = model.get_submodule(name)
        plist = module.parametrizations["weight"]
        if len(plist) == 1:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        else:
            plist.original.copy_(masked_weight(module))
            del plist[0]
    return model
