"""What the search may choose per layer (:class:`Option`), and the recipe variants it builds:
one uniform variant per option (the tables), one mixed variant per verified configuration."""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
from collections.abc import Sequence

from torch import nn

from codesign.config import LayerOverride, QuantSpec, SparsitySpec
from codesign.recipe import SearchSpec, VariantSpec


@dataclasses.dataclass(frozen=True)
class Option:
    """One per-layer choice: weight and input widths (bits) and sparsity ("dense", an N:M
    pattern such as "2:4", or an unstructured level such as "0.5")."""

    weight_bits: int
    act_bits: int
    sparsity: str

    @property
    def label(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}" + (
            "" if self.sparsity == "dense" else f"+{self.sparsity}"
        )


REFERENCE = Option(8, 8, "dense")


def options_of(spec: SearchSpec) -> list[Option]:
    """Every (weight bits, act bits, sparsity) combination; the reference W8A8 dense first."""
    combos = [
        Option(w, a, s)
        for w, a, s in itertools.product(
            sorted(set(spec.weight_bits), reverse=True),
            sorted(set(spec.act_bits), reverse=True),
            spec.sparsity,
        )
    ]
    return [REFERENCE] + [o for o in combos if o != REFERENCE]


def option_variant(option: Option, spec: SearchSpec, name: str) -> VariantSpec:
    """The uniform variant with every searchable layer at ``option``."""
    sparsity = None
    if option.sparsity != "dense":
        sparsity = SparsitySpec(sparsity=option.sparsity, method=spec.prune_method)
    return VariantSpec(
        name=name,
        sparsity=sparsity,
        quant=QuantSpec(
            weight_bits=option.weight_bits,
            act_bits=option.act_bits,
            keep_8bit=spec.keep_8bit,
            method=spec.quant_method,
        ),
    )


def configuration_variant(
    name: str,
    layer_names: Sequence[str],
    choices: Sequence[Option],
    spec: SearchSpec,
) -> VariantSpec:
    """A mixed configuration as one recipe variant: per-layer overrides (exact names)."""
    quant_overrides = tuple(
        LayerOverride(layer, weight_bits=o.weight_bits, act_bits=o.act_bits)
        for layer, o in zip(layer_names, choices, strict=True)
    )
    sparse = [(layer, o.sparsity) for layer, o in zip(layer_names, choices, strict=True)]
    patterns = sorted({s for _, s in sparse if s != "dense"})
    sparsity = None
    if patterns:
        sparsity = SparsitySpec(
            sparsity=patterns[0],
            overrides=tuple(LayerOverride(layer, sparsity=s) for layer, s in sparse),
            method=spec.prune_method,
        )
    return VariantSpec(
        name=name,
        sparsity=sparsity,
        finetune=spec.finetune if sparsity is not None else None,
        quant=QuantSpec(
            weight_bits=8,
            act_bits=8,
            keep_8bit=spec.keep_8bit,
            overrides=quant_overrides,
            method=spec.quant_method,
        ),
        qat=spec.qat,
    )


def searchable_layers(model: nn.Module, spec: SearchSpec) -> list[str]:
    """Conv2d/Linear names the search may change (all but the keep_8bit ones)."""
    from codesign.quant.ptq import keep_8bit_patterns

    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    kept = {
        name
        for pattern in keep_8bit_patterns(spec.keep_8bit, names)
        for name in names
        if fnmatch.fnmatchcase(name, pattern.pattern)
    }
    return [n for n in names if n not in kept]
