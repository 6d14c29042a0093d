"""Run recipes: which model, which data, which variants, on which hardware.

A recipe is a TOML file read with stdlib ``tomllib`` into the frozen dataclasses below; the
transformation specs inside it are the same ``QuantSpec`` / ``SparsitySpec`` / ``TrainSpec``
the CLI commands build, so a recipe variant and the standalone command with the same settings
run the same code. It loads through ``codesign.strict`` like every spec: a wrong type, a value
out of range or an unknown key is one error naming its TOML path (and the valid keys).

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
from typing import Annotated, Any, Literal

from codesign.config import (
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_FINETUNE,
    DEFAULT_QAT,
    DEFAULT_VALIDATION_FRACTION,
    PruneMethod,
    PtqMethod,
    QATSpec,
    QuantSpec,
    Seed,
    SparsitySpec,
    TrainSpec,
    as_qat_spec,
    check_progressive,
    check_sparsity_text,
    from_dict,
    load_toml,
    to_dict,
)
from codesign.errors import ConfigError

# The resolvers of recipe names and ``bundled:`` checkpoints live in codesign.resources (with
# the bundled files they find); imported here too for the callers that take them from here.
from codesign.resources import resolve_checkpoint as resolve_checkpoint
from codesign.resources import resolve_named_file as resolve_named_file
from codesign.strict import (
    NOT_BLANK,
    NOT_EMPTY,
    Check,
    Count,
    PositiveInt,
    check_fields,
    check_schema_version,
)

SCHEMA_VERSION = 1

# The settings `codesign qat` and `codesign prune --epochs E` use when a recipe's [qat] or
# [finetune] table leaves a key out, so that a recipe variant reproduces the standalone command.
QAT_DEFAULTS: dict[str, Any] = {k: v for k, v in to_dict(DEFAULT_QAT).items() if k != "seed"}
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
    num_classes: PositiveInt | None = None
    cifar_stem: bool | None = None

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """``source`` is a ``--data`` spec (digits | cifar10:DIR | imagefolder:DIR | npz:FILE).

    ``validation_fraction`` of the training split is held out as the validation split (what
    the search reads; never calibrated or trained on). ``calib_samples`` training images
    calibrate PTQ; ``capture_samples`` validation images are run through the hooked model for
    the hardware model; ``eval_samples`` caps the test images scored (0: all).
    ``image_size`` resizes and centre-crops ImageFolder and CIFAR-10 images (ImageNet);
    ``max_train_samples`` / ``max_test_samples`` load only that many images (0: all). Every
    subset is a class-stratified sample seeded by ``subset_seed``. ``stream``: decode
    ImageFolder / CIFAR-10 images per batch with a DataLoader of ``workers`` processes
    (default: the usable cores less one, at most 8) instead of preloading them.
    """

    source: Annotated[str, NOT_BLANK] = "digits"
    download: bool = False
    calib_samples: PositiveInt = DEFAULT_CALIB_SAMPLES
    capture_samples: PositiveInt = 32
    eval_samples: Count = 0
    image_size: Count = 0
    max_train_samples: Count = 0
    max_test_samples: Count = 0
    validation_fraction: Annotated[float, Check(lambda f: 0.0 < f < 1.0, "in (0, 1)")] = (
        DEFAULT_VALIDATION_FRACTION
    )
    subset_seed: Seed = 0
    stream: bool = False
    workers: Count | None = None

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class HardwareSpec:
    """Datapaths (``recipes/hardware/<name>.toml`` names or paths) and the energy table
    (``recipes/energy/<name>.toml`` name or path; ``horowitz45`` is the built-in default)."""

    archs: Annotated[tuple[str, ...], NOT_EMPTY] = ("systolic-32x32-ws", "scnn")
    energy: str = "horowitz45"

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """One configuration: prune (``sparsity``, fine-tuned by ``finetune``), then quantize
    (``quant``, PTQ), then optionally quantization-aware training (``qat``).

    A variant without ``sparsity`` and ``quant`` is the float baseline. Keys a ``qat`` /
    ``finetune`` table leaves out take the ``codesign qat`` / ``codesign prune`` settings.
    ``export = true`` also writes the built model as ONNX beside it (``codesign export``:
    ``model.onnx`` and its onnxruntime check ``export.json`` in the variant's folder); it
    changes no figure, so it is not part of the variant's cache key.
    """

    name: Annotated[str, NOT_BLANK]
    quant: QuantSpec | None = None
    qat: QATSpec | None = dataclasses.field(default=None, metadata={"defaults": QAT_DEFAULTS})
    sparsity: SparsitySpec | None = None
    finetune: TrainSpec | None = dataclasses.field(
        default=None, metadata={"defaults": FINETUNE_DEFAULTS}
    )
    export: bool | None = None

    def __post_init__(self) -> None:
        # A plain TrainSpec given in code is a QAT table without progressive stages.
        object.__setattr__(self, "qat", as_qat_spec(self.qat))
        check_fields(self)
        if self.export and self.quant is None:
            raise ConfigError(
                f"variant {self.name!r}: export = true needs a [quant] table (the ONNX export "
                "writes a quantized model)"
            )
        if self.qat is not None and self.quant is None:
            raise ConfigError(f"variant {self.name!r}: [qat] needs a [quant] table too")
        if self.qat is not None and self.quant is not None:
            check_progressive(self.quant, self.qat)
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
    simulated per-layer energy is minimised. ``sensitivity_samples`` validation images
    measure each layer's accuracy drop (the test split is never used to choose). ``verify``: how many
    configurations of the searched front are built and evaluated for real. ``finetune``: fine-
    tuning of sparse models before their PTQ (none if absent). ``qat``: quantization-aware
    training of every model the search builds after its PTQ, pruning masks kept (none if
    absent). Both apply to the uniform models the sensitivity is measured on as to the
    verified configurations, so the drops measure what that training leaves.
    ``prune_method``: how sparse options choose their masks, "magnitude" or "sparsegpt"
    (``SparsitySpec.method``; SparseGPT needs no fine-tuning to be close, so its one-shot
    sensitivities predict the fine-tuned configurations better). ``quant_method``: the PTQ
    method (``QuantSpec.method``) of every model the search builds; with ``qat`` a cheap
    one ("mse") is enough, as QAT learns the rounding and ranges after it.
    """

    datapath: str = "scnn"
    weight_bits: Annotated[tuple[Literal[4, 8], ...], NOT_EMPTY] = (4, 8)
    act_bits: Annotated[tuple[Literal[4, 8], ...], NOT_EMPTY] = (4, 8)
    sparsity: Annotated[tuple[str, ...], NOT_EMPTY] = ("dense", "2:4")
    keep_8bit: tuple[str, ...] = ("first", "last")
    sensitivity_samples: PositiveInt = 1024
    verify: PositiveInt = 4
    finetune: TrainSpec | None = dataclasses.field(
        default=None, metadata={"defaults": FINETUNE_DEFAULTS}
    )
    qat: QATSpec | None = dataclasses.field(default=None, metadata={"defaults": QAT_DEFAULTS})
    prune_method: PruneMethod = "magnitude"
    quant_method: PtqMethod = "auto"

    def __post_init__(self) -> None:
        # A plain TrainSpec given in code is a QAT table without progressive stages.
        object.__setattr__(self, "qat", as_qat_spec(self.qat))
        check_fields(self)
        for level in self.sparsity:
            check_sparsity_text(level)


def _is_device(text: str) -> bool:
    from codesign.runtime import parse_device

    try:
        parse_device(text)
    except ConfigError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole study. ``train``: train the float model from scratch first (FP32 baseline
    recipes); otherwise ``model.checkpoint`` is loaded. ``device`` (auto | cpu | cuda |
    cuda:N) and ``amp`` (off | bf16) say where and in which precision it computes
    (``--device`` / ``--amp`` replace them; see :mod:`codesign.runtime`).

    ``seed``: the seed of every training run. ``seeds``: several seeds (distinct, at least
    one): every variant that trains is built at each of them and the report gives the spread;
    ``seed`` is then ``seeds[0]``, where everything seed-independent is built. A file gives
    ``seed`` or ``seeds``, not both.
    """

    name: str
    model: ModelSpec
    data: DataSpec
    hardware: HardwareSpec
    variants: tuple[VariantSpec, ...]
    seed: Seed = 0
    device: Annotated[str, Check(_is_device, "(auto, cpu, cuda or cuda:N)")] = "auto"
    amp: Literal["off", "bf16"] = "off"
    seeds: Annotated[tuple[Seed, ...], NOT_EMPTY] | None = None
    train: TrainSpec | None = dataclasses.field(default=None, metadata={"defaults": TRAIN_DEFAULTS})
    search: SearchSpec | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_fields(self)
        if self.seeds is not None:
            repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
            if repeated:
                raise ConfigError(
                    f"seeds must be distinct; repeated: {', '.join(map(str, repeated))}"
                )
            object.__setattr__(self, "seed", self.seeds[0])
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

    @property
    def all_seeds(self) -> tuple[int, ...]:
        """The study's seeds, ``seed`` first: ``seeds``, or ``(seed,)``."""
        return self.seeds if self.seeds is not None else (self.seed,)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON-able data (every default filled in; ``seeds``
        instead of ``seed`` when the recipe has several, as a file spells it)."""
        data = {k: v for k, v in to_dict(self).items() if v is not None}
        if self.seeds is not None:
            data.pop("seed")
        data["variants"] = [v.to_dict() for v in self.variants]
        if self.search is not None:
            for table in ("finetune", "qat"):
                if getattr(self.search, table) is None:
                    data["search"].pop(table)
        return data


def recipe_from_dict(data: Mapping[str, Any], where: str = "recipe") -> Recipe:
    """Build a Recipe from parsed TOML/JSON; every error names the offending path.

    ``name`` defaults to ``where``, ``[model]`` / ``[data]`` / ``[hardware]`` to their field
    defaults; without ``[[variants]]`` a ``[train]`` recipe gets the float baseline ``fp32``.
    """
    check_schema_version(data, SCHEMA_VERSION, where, ConfigError)
    if "seed" in data and "seeds" in data:
        raise ConfigError(
            f"{where}: give seed = N (one seed) or seeds = [N, ...] (several), not both"
        )
    filled = {"name": where, "model": {}, "data": {}, "hardware": {}, **data}
    if not data.get("variants", []):
        if "train" not in data:
            raise ConfigError(f"{where}: no [[variants]]: list at least one (e.g. name = 'fp32')")
        filled["variants"] = [{"name": "fp32"}]
    return from_dict(Recipe, filled, where)


def load_recipe(path: str | Path, data_override: str | None = None) -> Recipe:
    """Read a recipe TOML; ``data_override`` replaces ``data.source`` (the CLI's ``--data``)."""
    recipe = recipe_from_dict(load_toml(path), where=Path(path).name)
    if data_override:
        recipe = dataclasses.replace(
            recipe, data=dataclasses.replace(recipe.data, source=data_override)
        )
    return recipe


# File systems cap a name at 255 bytes; the cache key after the slug keeps names unique.
SLUG_MAX_CHARS = 64


def slug(text: str) -> str:
    """A file-name-safe form of a variant name, at most ``SLUG_MAX_CHARS`` long.

    >>> slug("2:4 + int8"), len(slug("x" * 300))
    ('2-4-int8', 64)
    """
    safe = re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.")[:SLUG_MAX_CHARS].strip("-.")
    return safe or "variant"


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (the cache key of a variant)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
