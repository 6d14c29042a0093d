"""Frozen config dataclasses and strict TOML loading.

Every run is described by data: a ``QuantSpec`` says how to quantize, a ``SparsitySpec`` how to
prune. Specs round-trip through plain dicts (``to_dict``/``from_dict``), so they can be saved
as JSON beside every result and inside every checkpoint. Unknown keys are errors that name
the TOML path and the valid keys.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from codesign.errors import ConfigError

# How a sparsity spec chooses its masks (``SparsitySpec.method``, ``[search] prune_method``,
# ``codesign prune --prune-method``).
PRUNE_METHODS = ("magnitude", "sparsegpt")
# Training images that calibrate PTQ ranges and feed SparseGPT, unless a command or recipe
# says otherwise (``--calib-samples``, ``[data] calib_samples``).
DEFAULT_CALIB_SAMPLES = 512
# Share of the training split held out as the validation split (``--validation-fraction``,
# ``[data] validation_fraction``): what the search and any model selection read.
DEFAULT_VALIDATION_FRACTION = 0.1

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

T = TypeVar("T")

SUPPORTED_BITS = range(2, 9)


def check_bits(bits: int, what: str) -> int:
    """Validate an integer bit width (2..8) and return it."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ConfigError(
            f"unsupported {what} bit width {bits!r}: use an integer from 2 to 8 "
            "(INT8 and INT4 are the first-class widths)"
        )
    return bits


@dataclasses.dataclass(frozen=True)
class LayerOverride:
    """Per-layer settings for the layers whose name matches ``pattern`` (fnmatch syntax)."""

    pattern: str
    weight_bits: int | None = None
    act_bits: int | None = None
    skip: bool = False  # leave the matched layers unquantized / unpruned
    sparsity: str | None = None  # for pruning overrides: "2:4", "0.5", or "dense"

    def __post_init__(self) -> None:
        if self.weight_bits is not None:
            check_bits(self.weight_bits, f"override {self.pattern!r} weight")
        if self.act_bits is not None:
            check_bits(self.act_bits, f"override {self.pattern!r} activation")


def resolve_overrides(
    layer_names: Sequence[str], overrides: Iterable[LayerOverride]
) -> dict[str, LayerOverride]:
    """Map each layer name to the last override whose pattern matches it.

    Overrides form an ordered list; the last match wins (like CSS, unlike ModelOpt's dict).
    A pattern that matches no layer is an error: it is almost always a typo.

    >>> ov = [LayerOverride("layer*", weight_bits=4), LayerOverride("layer1.0.conv1", weight_bits=8)]
    >>> {k: v.weight_bits for k, v in resolve_overrides(["conv1", "layer1.0.conv1", "layer1.0.conv2"], ov).items()}
    {'layer1.0.conv1': 8, 'layer1.0.conv2': 4}
    """
    resolved: dict[str, LayerOverride] = {}
    for override in overrides:
        matched = [name for name in layer_names if fnmatch.fnmatchcase(name, override.pattern)]
        if not matched:
            close = fnmatch.filter(layer_names, f"*{override.pattern.strip('*')}*")[:5]
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise ConfigError(
                f"layer pattern {override.pattern!r} matches no layer "
                f"(layers are named like {', '.join(layer_names[:4])}, ...{hint})"
            )
        for name in matched:
            resolved[name] = override
    return resolved


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """How to quantize a model.

    Weights are symmetric (per output channel by default); activations (the input of every
    Conv2d/Linear) per tensor, unsigned where the observed input is non-negative.
    ``method`` picks the range estimator: minmax | percentile | mse, or auto = adaround: min-max
    ranges for 8-bit quantizers, MSE-optimal clipping below 8 bits, and learned rounding of
    weights below 8 bits (AdaRound, Nagel et al., ICML 2020). At 8 bits the grid is fine enough
    that min-max ranges lose little to clipped ones and need no search; at 4 bits range clipping
    and rounding decisions dominate the error (Nagel et al., "A White Paper on Neural Network
    Quantization", 2021). Measured effects: docs/results/.
    """

    weight_bits: int = 8
    act_bits: int = 8
    per_channel: bool = True
    method: str = "auto"
    percentile: float = 99.99
    bias_correction: bool = True
    fold_bn: bool = True
    keep_8bit: tuple[str, ...] = ()
    overrides: tuple[LayerOverride, ...] = ()

    def __post_init__(self) -> None:
        check_bits(self.weight_bits, "weight")
        check_bits(self.act_bits, "activation")
        if self.method not in PTQ_METHODS:
            raise ConfigError(
                f"unknown PTQ method {self.method!r}: choose one of {', '.join(PTQ_METHODS)}"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile {self.percentile} must lie in (50, 100]")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "quant") -> QuantSpec:
        return from_dict(cls, data, where)


PTQ_METHODS = ("auto", "minmax", "percentile", "mse", "adaround")


@dataclasses.dataclass(frozen=True)
class SparsitySpec:
    """How to prune a model.

    ``sparsity`` is either an N:M pattern ("2:4") or a fraction of weights to remove ("0.7").
    ``scope`` is "layer" (every layer at the level), "global" (one magnitude threshold) or
    "lamp" (one threshold on LAMP scores, Lee et al. 2021: magnitudes normalised per layer).
    ``schedule`` is "oneshot" or "cubic" (Zhu & Gupta 2017, over the fine-tuning steps).
    ``permute``: before N:M pruning, reorder the input channels of every N:M layer fed by a
    conv -> BN -> ReLU chain so its groups keep more magnitude (Pool & Yu 2021); the dense
    network computes the same function, only which weights share a group changes.
    ``method``: "magnitude" keeps the largest weights; "sparsegpt" (Frantar & Alistarh 2023)
    chooses by the output error on calibration images and repairs the kept weights (one-shot,
    layer-wise levels and N:M; see ``codesign.sparsity.obs``).
    ``prune_start`` / ``prune_end``: where the cubic schedule ramps, as fractions of the
    fine-tuning steps; ``prune_updates``: mask updates per epoch (Zhu & Gupta 2017 prune over
    most of training and leave the rest to recover at the final level).
    """

    sparsity: str = "2:4"
    scope: str = "layer"
    schedule: str = "oneshot"
    strict: bool = False
    exclude: tuple[str, ...] = ("conv1", "fc", "linear")
    overrides: tuple[LayerOverride, ...] = ()
    permute: bool = False
    method: str = "magnitude"
    prune_start: float = 0.0
    prune_end: float = 0.6
    prune_updates: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_start < self.prune_end <= 1.0:
            raise ConfigError(
                "sparsity.prune_start and prune_end are fractions of the fine-tuning steps "
                f"with 0 <= start < end <= 1, got {self.prune_start} and {self.prune_end}"
            )
        if isinstance(self.prune_updates, bool) or not (
            isinstance(self.prune_updates, int) and self.prune_updates >= 1
        ):
            raise ConfigError(
                f"sparsity.prune_updates must be an integer >= 1, got {self.prune_updates!r}"
            )
        if self.scope not in ("layer", "global", "lamp"):
            raise ConfigError(
                f"unknown pruning scope {self.scope!r}: use 'layer', 'global' or 'lamp'"
            )
        if self.schedule not in ("oneshot", "cubic"):
            raise ConfigError(f"unknown schedule {self.schedule!r}: use 'oneshot' or 'cubic'")
        if self.method not in PRUNE_METHODS:
            raise ConfigError(
                f"unknown pruning method {self.method!r}: use one of {', '.join(PRUNE_METHODS)}"
            )
        if self.method == "sparsegpt" and (self.scope, self.schedule) != ("layer", "oneshot"):
            raise ConfigError(
                "method 'sparsegpt' prunes one-shot, layer by layer: use scope 'layer' and "
                f"schedule 'oneshot' (got scope {self.scope!r}, schedule {self.schedule!r})"
            )
        if not isinstance(self.permute, bool):
            raise ConfigError(f"sparsity.permute must be true or false, got {self.permute!r}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "sparsity") -> SparsitySpec:
        return from_dict(cls, data, where)


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Fine-tuning / training settings: SGD with momentum and a cosine learning-rate decay.

    ``distill_temperature`` > 0 adds a KL term to the float teacher's logits (Hinton et al.
    2015), which is what keeps QAT and pruning recovery from overfitting a small train split.
    ``freeze_bn_epoch``: from this epoch on BatchNorm statistics stop updating (-1: never).
    """

    epochs: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    distill_temperature: float = 0.0
    distill_weight: float = 0.9
    freeze_bn_epoch: int = -1
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(
                f"training needs epochs >= 0, batch_size >= 1 and lr > 0 "
                f"(got epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr})"
            )
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ConfigError(f"distill_weight {self.distill_weight} must lie in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "train") -> TrainSpec:
        return from_dict(cls, data, where)


# The fine-tuning `codesign prune` and recipe [finetune] tables use unless told otherwise:
# SGD (momentum 0.9, Nesterov, wd 5e-4), lr 0.01 cosine, batch 128, distillation from the
# dense model at T=4 with weight 0.7 (DESIGN.md "Training with little data"), 3 epochs.
DEFAULT_FINETUNE = TrainSpec(epochs=3, lr=0.01, distill_temperature=4.0, distill_weight=0.7)
# The QAT `codesign qat` and recipe [qat] tables use unless told otherwise: 8 epochs, lr 2e-4
# (with BN folded nothing renormalises the weights, so larger rates diverge at 4 bits), no
# weight decay (it would pull LSQ step sizes and the folded weights towards 0), distillation
# from the float model at T=4 with weight 0.9.
DEFAULT_QAT = TrainSpec(
    epochs=8, lr=0.0002, weight_decay=0.0, distill_temperature=4.0, distill_weight=0.9
)


def to_dict(spec: Any) -> dict[str, Any]:
    """A JSON-able dict of a (nested) frozen dataclass; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(spec)


def from_dict(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError naming ``where``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]}: valid keys are {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name == "overrides":
            kwargs[name] = tuple(
                from_dict(LayerOverride, item, f"{where}.overrides[{i}]")
                for i, item in enumerate(value)
            )
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"[{where}]: {exc}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing file or a syntax error is a ConfigError."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"recipe not found: {source} (give the path of a .toml file)")
    try:
        with source.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
