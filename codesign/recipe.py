"""Run recipes: which model, which data, which variants, on which hardware.

A recipe is a TOML file read with stdlib ``tomllib`` into the frozen dataclasses below; the
transformation specs inside it are the same ``QuantSpec`` / ``SparsitySpec`` / ``TrainSpec``
the CLI commands build, so a recipe variant and the standalone command with the same settings
run the same code. Unknown keys are errors naming their TOML path and the valid keys.

This lives beside ``config.py`` rather than inside it: ``config.py`` holds the specs of one
transformation, this module the composition of a whole study.

A minimal recipe::

    schema_version = 1
    name = "digits"
    [model]
    checkpoint = "bundled:resnet8-digits"
    [data]
    source = "digits"
    [hardware]
    archs = ["systolic-16x16-ws", "scnn"]
    [[variants]]
    name = "fp32"
    [[variants]]
    name = "w8a8"
    quant = { weight_bits = 8, act_bits = 8 }
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codesign.config import (
    DEFAULT_CALIB_SAMPLES,
    PRUNE_METHODS,
    QuantSpec,
    SparsitySpec,
    TrainSpec,
    from_dict,
    load_toml,
    to_dict,
)
from codesign.errors import ConfigError

# The resolvers of recipe names and ``bundled:`` checkpoints live in codesign.resources (with
# the bundled files they find); imported here too for the callers that take them from here.
from codesign.resources import resolve_checkpoint as resolve_checkpoint
from codesign.resources import resolve_named_file as resolve_named_file
from codesign.sparsity.finetune import DEFAULT_FINETUNE

SCHEMA_VERSION = 1

# The settings `codesign qat` and `codesign prune --epochs E` use when a recipe's [qat] or
# [finetune] table leaves a key out, so that a recipe variant reproduces the standalone command.
QAT_DEFAULTS: dict[str, Any] = {
    "epochs": 8,
    "lr": 0.0002,
    "weight_decay": 0.0,
    "distill_temperature": 4.0,
    "distill_weight": 0.9,
}
FINETUNE_DEFAULTS: dict[str, Any] = {
    k: v for k, v in to_dict(DEFAULT_FINETUNE).items() if k != "seed"
}
TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 30, "lr": 0.1}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """``name`` defaults to what the checkpoint says; ``checkpoint`` is a path (relative to
    the working directory) or ``bundled:<file stem>`` for a checkpoint inside the package.
    Without a checkpoint the recipe must have a ``[train]`` table (training from scratch)."""

    name: str | None = None
    checkpoint: str | None = None
    num_classes: int | None = None
    cifar_stem: bool | None = None


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """``source`` is a ``--data`` spec (digits | cifar10:DIR | imagefolder:DIR | npz:FILE).

    ``calib_samples`` training images calibrate PTQ; ``capture_samples`` test images are run
    through the hooked model for the hardware model; ``eval_samples`` caps the test images
    scored (0: all). ``image_size`` resizes and centre-crops ImageFolder images (ImageNet);
    ``max_train_samples`` / ``max_test_samples`` load only that many images, spread over the
    classes (0: all).
    """

    source: str = "digits"
    download: bool = False
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    capture_samples: int = 32
    eval_samples: int = 0
    image_size: int = 0
    max_train_samples: int = 0
    max_test_samples: int = 0

    def __post_init__(self) -> None:
        if self.calib_samples < 1 or self.capture_samples < 1 or self.eval_samples < 0:
            raise ConfigError(
                "data.calib_samples and data.capture_samples must be >= 1 and "
                f"data.eval_samples >= 0 (got {self.calib_samples}, {self.capture_samples}, "
                f"{self.eval_samples})"
            )


@dataclasses.dataclass(frozen=True)
class HardwareSpec:
    """Datapaths (``recipes/hardware/<name>.toml`` names or paths) and the energy table
    (``recipes/energy/<name>.toml`` name or path; ``horowitz45`` is the built-in default)."""

    archs: tuple[str, ...] = ("systolic-32x32-ws", "scnn")
    energy: str = "horowitz45"

    def __post_init__(self) -> None:
        if not self.archs:
            raise ConfigError("hardware.archs is empty: name at least one datapath")


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """One configuration: prune (``sparsity``, fine-tuned by ``finetune``), then quantize
    (``quant``, PTQ), then optionally quantization-aware training (``qat``).

    A variant without ``sparsity`` and ``quant`` is the float baseline.
    """

    name: str
    quant: QuantSpec | None = None
    qat: TrainSpec | None = None
    sparsity: SparsitySpec | None = None
    finetune: TrainSpec | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("every variant needs a non-empty name")
        if self.qat is not None and self.quant is None:
            raise ConfigError(f"variant {self.name!r}: [qat] needs a [quant] table too")
        if self.finetune is not None and self.sparsity is None:
            raise ConfigError(f"variant {self.name!r}: [finetune] needs a [sparsity] table too")

    @property
    def label(self) -> str:
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in to_dict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """Per-layer choices the co-design search may assign, and how it scores them.

    ``weight_bits`` / ``act_bits``: widths each layer may take. ``sparsity``: "dense", N:M
    patterns and unstructured levels per layer. ``datapath``: the architecture whose
    simulated per-layer energy is minimised. ``sensitivity_samples`` training images measure
    each layer's accuracy drop (the test split is never used to choose). ``verify``: how many
    configurations of the searched front are built and evaluated for real. ``finetune``: fine-
    tuning of sparse configurations before their verification (none if absent). ``qat``:
    quantization-aware training of every verified configuration after its PTQ, pruning masks
    kept (none if absent): what the front's one-shot predictions are then checked against.
    ``prune_method``: how sparse options choose their masks, "magnitude" or "sparsegpt"
    (``SparsitySpec.method``; SparseGPT needs no fine-tuning to be close, so its one-shot
    sensitivities predict the fine-tuned configurations better).
    """

    datapath: str = "scnn"
    weight_bits: tuple[int, ...] = (4, 8)
    act_bits: tuple[int, ...] = (4, 8)
    sparsity: tuple[str, ...] = ("dense", "2:4")
    keep_8bit: tuple[str, ...] = ("first", "last")
    sensitivity_samples: int = 1024
    verify: int = 4
    finetune: TrainSpec | None = None
    qat: TrainSpec | None = None
    prune_method: str = "magnitude"

    def __post_init__(self) -> None:
        if self.prune_method not in PRUNE_METHODS:
            raise ConfigError(
                f"search.prune_method {self.prune_method!r}: use one of {', '.join(PRUNE_METHODS)}"
            )
        for bits in (*self.weight_bits, *self.act_bits):
            if bits not in (4, 8):
                raise ConfigError(f"search widths must be 4 or 8, got {bits}")
        if not self.weight_bits or not self.act_bits or not self.sparsity:
            raise ConfigError("search.weight_bits, act_bits and sparsity need >= 1 choice each")
        if self.verify < 1 or self.sensitivity_samples < 1:
            raise ConfigError("search.verify and search.sensitivity_samples must be >= 1")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole study. ``train``: train the float model from scratch first (FP32 baseline
    recipes); otherwise ``model.checkpoint`` is loaded."""

    name: str
    model: ModelSpec
    data: DataSpec
    hardware: HardwareSpec
    variants: tuple[VariantSpec, ...]
    seed: int = 0
    train: TrainSpec | None = None
    search: SearchSpec | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"variant names must be unique; repeated: {', '.join(duplicated)}")
        if self.model.checkpoint is None and self.train is None:
            raise ConfigError(
                "the recipe names no model.checkpoint and has no [train] table: give one"
            )
        if self.model.checkpoint is None and self.model.name is None:
            raise ConfigError("training from scratch needs model.name (see list_models())")

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON-able data (every default filled in)."""
        data = {k: v for k, v in to_dict(self).items() if v is not None}
        data["variants"] = [v.to_dict() for v in self.variants]
        if self.search is not None:
            for table in ("finetune", "qat"):
                if getattr(self.search, table) is None:
                    data["search"].pop(table)
        return data


def _train_spec(data: Any, defaults: Mapping[str, Any], where: str) -> TrainSpec:
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {type(data).__name__}")
    return from_dict(TrainSpec, {**defaults, **data}, where)


def _section(cls: type, data: Any, where: str) -> Any:
    return from_dict(cls, data if data is not None else {}, where)


def _variant(data: Any, where: str) -> VariantSpec:
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {type(data).__name__}")
    valid = {f.name for f in dataclasses.fields(VariantSpec)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]}: valid keys are {', '.join(sorted(valid))}"
        )
    if "name" not in data:
        raise ConfigError(f"[{where}] needs a name")
    return VariantSpec(
        name=str(data["name"]),
        quant=from_dict(QuantSpec, data["quant"], f"{where}.quant") if "quant" in data else None,
        qat=_train_spec(data["qat"], QAT_DEFAULTS, f"{where}.qat") if "qat" in data else None,
        sparsity=from_dict(SparsitySpec, data["sparsity"], f"{where}.sparsity")
        if "sparsity" in data
        else None,
        finetune=_train_spec(data["finetune"], FINETUNE_DEFAULTS, f"{where}.finetune")
        if "finetune" in data
        else None,
    )


def _search(data: Any, where: str) -> SearchSpec:
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {type(data).__name__}")
    plain = {k: v for k, v in data.items() if k not in ("finetune", "qat")}
    spec = from_dict(SearchSpec, plain, where)
    if "finetune" in data:
        spec = dataclasses.replace(
            spec, finetune=_train_spec(data["finetune"], FINETUNE_DEFAULTS, f"{where}.finetune")
        )
    if "qat" in data:
        spec = dataclasses.replace(spec, qat=_train_spec(data["qat"], QAT_DEFAULTS, f"{where}.qat"))
    return spec


RECIPE_KEYS = (
    "schema_version",
    "name",
    "seed",
    "model",
    "data",
    "hardware",
    "variants",
    "train",
    "search",
)


def recipe_from_dict(data: Mapping[str, Any], where: str = "recipe") -> Recipe:
    """Build a Recipe from parsed TOML/JSON; every error names the offending path."""
    unknown = sorted(set(data) - set(RECIPE_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key {where}: {unknown[0]}: valid keys are {', '.join(RECIPE_KEYS)}"
        )
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"{where}: schema_version = {version!r}, this codesign reads schema_version = "
            f"{SCHEMA_VERSION}; add or update the line at the top of the recipe"
        )
    variants = data.get("variants", [])
    if not isinstance(variants, list):
        raise ConfigError(f"{where}: variants must be an array of tables ([[variants]] blocks)")
    if not variants and "train" not in data:
        raise ConfigError(f"{where}: no [[variants]]: list at least one (e.g. name = 'fp32')")
    return Recipe(
        name=str(data.get("name", where)),
        seed=int(data.get("seed", 0)),
        model=_section(ModelSpec, data.get("model"), f"{where}.model"),
        data=_section(DataSpec, data.get("data"), f"{where}.data"),
        hardware=_section(HardwareSpec, data.get("hardware"), f"{where}.hardware"),
        variants=tuple(
            _variant(item, f"{where}.variants[{i}]") for i, item in enumerate(variants or [])
        )
        or (VariantSpec(name="fp32"),),
        train=_train_spec(data["train"], TRAIN_DEFAULTS, f"{where}.train")
        if "train" in data
        else None,
        search=_search(data["search"], f"{where}.search") if "search" in data else None,
    )


def load_recipe(path: str | Path, data_override: str | None = None) -> Recipe:
    """Read a recipe TOML; ``data_override`` replaces ``data.source`` (the CLI's ``--data``)."""
    recipe = recipe_from_dict(load_toml(path), where=Path(path).name)
    if data_override:
        recipe = dataclasses.replace(
            recipe, data=dataclasses.replace(recipe.data, source=data_override)
        )
    return recipe


def slug(text: str) -> str:
    """A file-name-safe form of a variant name ("2:4 + int8" -> "2-4-int8")."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-") or "variant"


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (the cache key of a variant)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
