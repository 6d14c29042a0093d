"""Frozen config dataclasses of one transformation each, loaded strictly.

Every run is described by data: a ``QuantSpec`` says how to quantize, a ``SparsitySpec`` how to
prune. Specs round-trip through plain dicts (``to_dict``/``from_dict``), so they can be saved
as JSON beside every result and inside every checkpoint. Field annotations are the schema:
``codesign.strict`` checks every value against them, from a file (errors name the TOML path:
wrong type, value out of range, unknown key with the valid keys) or from code (``__post_init__``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

from codesign.errors import ConfigError
from codesign.strict import (
    NOT_BLANK,
    Check,
    Count,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    at_least,
    between,
    check_fields,
    from_dict,
    load_toml,
    to_dict,
)

__all__ = [
    "DEFAULT_CALIB_SAMPLES",
    "DEFAULT_FINETUNE",
    "DEFAULT_QAT",
    "DEFAULT_VALIDATION_FRACTION",
    "MAX_SEED",
    "PRUNE_METHODS",
    "PTQ_METHODS",
    "LayerOverride",
    "QATSpec",
    "QATStage",
    "QuantSpec",
    "Seed",
    "SparsitySpec",
    "TrainSpec",
    "as_qat_spec",
    "check_bits",
    "check_progressive",
    "from_dict",
    "load_toml",
    "qat_width_defaults",
    "resolve_overrides",
    "to_dict",
]

# How a sparsity spec chooses its masks (``SparsitySpec.method``, ``[search] prune_method``,
# ``codesign prune --prune-method``).
PruneMethod = Literal["magnitude", "sparsegpt"]
PRUNE_METHODS: tuple[str, ...] = get_args(PruneMethod)
PtqMethod = Literal["auto", "minmax", "percentile", "mse", "adaround", "gptq", "brecq"]
PTQ_METHODS: tuple[str, ...] = get_args(PtqMethod)
# Training images that calibrate PTQ ranges and feed SparseGPT, unless a command or recipe
# says otherwise (``--calib-samples``, ``[data] calib_samples``).
DEFAULT_CALIB_SAMPLES = 512
# Share of the training split held out as the validation split (``--validation-fraction``,
# ``[data] validation_fraction``): what the search and any model selection read.
DEFAULT_VALIDATION_FRACTION = 0.1

# torch.manual_seed takes an unsigned 64-bit seed; a larger one fails mid-run.
MAX_SEED = 2**64 - 1
Seed = Annotated[int, between(0, MAX_SEED, "from 0 to 2**64 - 1")]

FinitePositive = Annotated[float, Check(lambda value: math.isfinite(value) and value > 0, "> 0")]

SUPPORTED_BITS = range(2, 9)
Bits = Annotated[int, Check(lambda bits: bits in SUPPORTED_BITS, "from 2 to 8")]
ResidualBits = Annotated[
    int, Check(lambda bits: bits == 0 or bits in SUPPORTED_BITS, "0 (float sums) or from 2 to 8")
]


def check_bits(bits: int, what: str) -> int:
    """Validate an integer bit width (2..8) and return it."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ConfigError(
            f"unsupported {what + ' ' if what else ''}bit width {bits!r}: use an integer from 2 to 8 "
            "(INT8 and INT4 are the first-class widths)"
        )
    return bits


def check_sparsity_text(text: str | None) -> None:
    """Raise ConfigError unless ``text`` is "dense", an N:M pattern or a fraction in [0, 1):
    checked when a spec is made, so a bad level fails before any model is pruned."""
    if text is None:
        return
    from codesign.errors import SparsityError
    from codesign.sparsity.masks import parse_pattern  # torch: imported when a spec is made

    try:
        parse_pattern(text)
    except SparsityError as exc:
        raise ConfigError(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class LayerOverride:
    """Per-layer settings for the layers whose name matches ``pattern`` (fnmatch syntax)."""

    pattern: Annotated[str, NOT_BLANK]
    weight_bits: Bits | None = None
    act_bits: Bits | None = None
    skip: bool = False  # leave the matched layers unquantized / unpruned
    sparsity: str | None = None  # for pruning overrides: "2:4", "0.5", or "dense"

    def __post_init__(self) -> None:
        check_fields(self)
        check_sparsity_text(self.sparsity)


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
                f"layer pattern {override.pattern!r} matches no layer: fix or remove it "
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
    weights below 8 bits (AdaRound, Nagel et al., ICML 2020); gptq: min-max weight ranges,
    activation ranges as auto, weights below 8 bits rounded by GPTQ (Frantar et al., ICLR 2023), jointly with an N:M mask where the
    layer has one (``codesign.quant.gptq``). At 8 bits the grid is fine enough
    that min-max ranges lose little to clipped ones and need no search; at 4 bits range clipping
    and rounding decisions dominate the error (Nagel et al., "A White Paper on Neural Network
    Quantization", 2021). Measured effects: docs/results/.
    ``residual_bits``: the two operands of every residual sum (a model's ``ResidualAdd``
    modules) are quantized per tensor to this width, as an integer adder sees them; 0 leaves
    the sums in float. ``quantize_bias``: every bias is rounded to its layer's accumulator
    grid ``s_w[k] * s_x`` (int32 codes), as integer hardware adds it; false adds it in float.
    ``method`` brecq: block reconstruction with QDrop (``codesign.quant.brecq``): rounding and
    activation step sizes of each residual block learned against the float block's output.
    ``auto`` without ``calib_budget_s`` runs brecq when some layer input is below 8 bits,
    gptq when only weights are, and min-max ranges at 8 bits; with ``calib_budget_s``
    (seconds) it runs gptq, adaround and brecq, cheapest first, while they fit in that time,
    and keeps the one best on the validation split (``codesign.quant.choice``).
    """

    weight_bits: Bits = 8
    act_bits: Bits = 8
    per_channel: bool = True
    method: PtqMethod = "auto"
    percentile: Annotated[float, Check(lambda p: 50.0 < p <= 100.0, "in (50, 100]")] = 99.99
    bias_correction: bool = True
    fold_bn: bool = True
    keep_8bit: tuple[str, ...] = ()
    overrides: tuple[LayerOverride, ...] = ()
    residual_bits: ResidualBits = 8
    quantize_bias: bool = True
    calib_budget_s: FinitePositive | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.calib_budget_s is not None and self.method != "auto":
            raise ConfigError(
                f"quant.calib_budget_s chooses among methods under method 'auto'; method "
                f"{self.method!r} runs alone: drop calib_budget_s or use method 'auto'"
            )

    @property
    def narrowest_bits(self) -> int:
        """The narrowest weight or activation width (bits) any layer may get: the spec's
        own and every non-skipping override's."""
        widths = [self.weight_bits, self.act_bits]
        for override in self.overrides:
            if not override.skip:
                widths += [b for b in (override.weight_bits, override.act_bits) if b is not None]
        return min(widths)

    def to_dict(self) -> dict[str, Any]:
        data = to_dict(self)
        # Left out when unset, so the specs (and cache keys) of runs without it stay as they were.
        if data["calib_budget_s"] is None:
            del data["calib_budget_s"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "quant") -> QuantSpec:
        return from_dict(cls, data, where)


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
    scope: Literal["layer", "global", "lamp"] = "layer"
    schedule: Literal["oneshot", "cubic"] = "oneshot"
    strict: bool = False
    exclude: tuple[str, ...] = ("conv1", "fc", "linear")
    overrides: tuple[LayerOverride, ...] = ()
    permute: bool = False
    method: PruneMethod = "magnitude"
    prune_start: Annotated[float, between(0.0, 1.0, "in [0, 1]")] = 0.0
    prune_end: Annotated[float, between(0.0, 1.0, "in [0, 1]")] = 0.6
    prune_updates: PositiveInt = 10

    def __post_init__(self) -> None:
        check_fields(self)
        check_sparsity_text(self.sparsity)
        if self.prune_start >= self.prune_end:
            raise ConfigError(
                "sparsity.prune_start must come before prune_end (fractions of the "
                f"fine-tuning steps), got {self.prune_start} and {self.prune_end}"
            )
        if self.method == "sparsegpt" and (self.scope, self.schedule) != ("layer", "oneshot"):
            raise ConfigError(
                "method 'sparsegpt' prunes one-shot, layer by layer: use scope 'layer' and "
                f"schedule 'oneshot' (got scope {self.scope!r}, schedule {self.schedule!r})"
            )

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
    ``momentum`` lies in (0, 1): the SGD is Nesterov's, which needs a momentum.
    """

    epochs: Count = 8
    lr: PositiveFloat = 0.01
    momentum: Annotated[float, Check(lambda m: 0.0 < m < 1.0, "in (0, 1)")] = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    batch_size: PositiveInt = 128
    seed: Seed = 0
    distill_temperature: NonNegativeFloat = 0.0  # 0: no distillation
    distill_weight: Annotated[float, between(0.0, 1.0, "in [0, 1]")] = 0.9
    freeze_bn_epoch: Annotated[int, at_least(-1)] = -1
    warmup_epochs: NonNegativeFloat = 0.0

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "train") -> TrainSpec:
        return from_dict(cls, data, where)


@dataclasses.dataclass(frozen=True)
class QATStage:
    """One stage of progressive QAT: ``epochs`` of training with every quantizer narrower
    than ``bits`` widened to ``bits`` (layers kept wider stay as they are)."""

    bits: Bits
    epochs: PositiveInt

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class QATSpec(TrainSpec):
    """QAT settings: a :class:`TrainSpec` (``epochs`` are those at the final bit widths) and
    ``progressive``, the stages trained before the final widths, widest first (Zhuang et al.,
    "Towards Effective Low-bitwidth Convolutional Neural Networks", CVPR 2018: a network
    trained at a wider code starts the narrower one near a good solution). Each stage starts
    from the previous one with MSE ranges at its widths and its own cosine schedule; e.g.
    ``(QATStage(4, 3), QATStage(3, 3))`` trains a W2A2 model 3 epochs at W4A4, 3 at W3A3, then
    ``epochs`` at W2A2.
    """

    progressive: tuple[QATStage, ...] = dataclasses.field(
        default=(), metadata={"omit_default": True}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        widths = [stage.bits for stage in self.progressive]
        if any(later >= earlier for earlier, later in itertools.pairwise(widths)):
            raise ConfigError(
                f"qat.progressive: stage bit widths must decrease (widest first), got {widths}"
            )

    @property
    def total_epochs(self) -> int:
        """Epochs of every stage and the final widths together."""
        return self.epochs + sum(stage.epochs for stage in self.progressive)


def as_qat_spec(spec: TrainSpec | None) -> QATSpec | None:
    """``spec`` as a QATSpec (a plain TrainSpec has no progressive stages); None stays None."""
    if spec is None or isinstance(spec, QATSpec):
        return spec
    return QATSpec(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(TrainSpec)})


# Below this width (the narrower of a quant spec's weight and activation bits) QAT starts from
# learned rounding (``auto`` PTQ runs block reconstruction before QAT instead of nearest
# rounding): at W2A2 on the CIFAR-10 subset the nearest-rounded start is at chance (13 %) and
# a few thousand images do not train it back, while BRECQ's start is at 81.5 % and 32 QAT
# epochs reach 85.9 % (docs/results/resnet20-quantization.md).
LEARNED_ROUNDING_QAT_BELOW_BITS = 3


def qat_width_defaults(weight_bits: int, act_bits: int) -> dict[str, Any]:
    """The QAT settings ``codesign qat`` uses for these final widths where its flags leave
    them out, beyond :data:`DEFAULT_QAT`: below 4 bits the schedules chosen on the CIFAR-10
    subset (docs/results/resnet20-quantization.md). Narrowest width 3 bits: 4 epochs at W4A4
    then 16 at the final widths (Zhuang et al.'s progressive lowering); narrower: 32 epochs
    from the learned-rounding start and no stage (a W4A4 / W3A3 stage would be narrowed again
    by nearest rounding and lose that start). 4 bits and wider: none."""
    narrowest = min(weight_bits, act_bits)
    if narrowest >= 4:
        return {}
    if narrowest >= LEARNED_ROUNDING_QAT_BELOW_BITS:
        return {"epochs": 16, "progressive": (QATStage(bits=4, epochs=4),)}
    return {"epochs": 32}


def check_progressive(quant: QuantSpec, qat: TrainSpec) -> None:
    """Raise ConfigError unless every progressive stage is wider than the narrowest width the
    quant spec asks for (a stage at or below it would train the final model twice)."""
    stages = getattr(qat, "progressive", ())
    narrowest = min(quant.weight_bits, quant.act_bits)
    for stage in stages:
        if stage.bits <= narrowest:
            raise ConfigError(
                f"qat.progressive: a stage at {stage.bits} bits is not wider than the final "
                f"W{quant.weight_bits}A{quant.act_bits}: give stages above {narrowest} bits"
            )


# The fine-tuning `codesign prune` and recipe [finetune] tables use unless told otherwise:
# SGD (momentum 0.9, Nesterov, wd 5e-4), lr 0.01 cosine, batch 128, distillation from the
# dense model at T=4 with weight 0.7 (DESIGN.md "Training with little data"), 3 epochs.
DEFAULT_FINETUNE = TrainSpec(epochs=3, lr=0.01, distill_temperature=4.0, distill_weight=0.7)
# The QAT `codesign qat` and recipe [qat] tables use unless told otherwise: 8 epochs, lr 2e-4
# (with BN folded nothing renormalises the weights, so larger rates diverge at 4 bits), no
# weight decay (it would pull LSQ step sizes and the folded weights towards 0), distillation
# from the float model at T=4 with weight 0.9.
DEFAULT_QAT = QATSpec(
    epochs=8, lr=0.0002, weight_decay=0.0, distill_temperature=4.0, distill_weight=0.9
)
