"""A variant's outcome as one frozen value, and its JSON form (``variant.json``).

``VariantResult.to_json`` writes exactly the keys ``variant.json`` has always had, in the
same order, and ``from_json`` reads them back refusing any missing or unknown key, so a
result from disk and one just measured are the same type with the same values. Readers (the
report, the search, the scripts) use attributes, never string paths into nested dicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from codesign.data.subsets import SubsetInfo
from codesign.errors import CodesignError, ResultError
from codesign.hw.summary import NetworkSummary
from codesign.io import FlatJson, check_json_keys
from codesign.per_image import PerImageCorrect
from codesign.stats import top1_ci95

# What a pruning step measured on the way (``prune_model_``): N:M permutation gains and
# SparseGPT's per-layer output errors. Diagnostics passed through to the JSON as they are;
# nothing reads them back.
PRUNING_KEYS = ("permutation", "sparsegpt")


@dataclasses.dataclass(frozen=True)
class LayerSetting(FlatJson):
    """One Conv2d/Linear layer as built: weight and input widths (bits; 32 for a float
    layer), measured weight sparsity (zeros / weights) and the mask pattern ("dense", "2:4",
    "unstructured")."""

    name: str
    weight_bits: int
    act_bits: int
    sparsity: float
    pattern: str

    json_name: ClassVar[str] = "layer setting"


@dataclasses.dataclass(frozen=True)
class Timing(FlatJson):
    """Seconds this machine spent on the variant: training (fine-tuning, QAT), calibration,
    and in all (build, scoring, capture, simulation). Never in ``results.json``."""

    train_seconds: float
    calib_seconds: float
    total_seconds: float

    json_name: ClassVar[str] = "timing"


@dataclasses.dataclass(frozen=True)
class VariantResult:
    """Everything a built variant measured.

    ``key``: the cache key it was built under. ``variant``: its name; ``config``: its spec in
    JSON form (``VariantSpec.to_dict()``); ``seed``: the study seed it was built with.
    ``top1`` (%, ``correct`` of ``samples`` test images, only reported) and ``val_top1`` (%,
    on the validation split: what the search reads). ``test_correct``: which test images it
    got right (what paired tests read; in ``variant.json`` only, None where a result was read
    from ``results.json``). ``subsets``: every subset it read, by purpose. ``weight_sparsity``: zeros / weights
    over all Conv2d/Linear. ``captured_samples``: validation images whose tensors the hardware
    model measured; ``weight_density``, ``act_density`` (nonzeros / elements) and
    ``effectual_mac_fraction`` (MACs with both operands nonzero / dense MACs) over them.
    ``layers``: per-layer widths and sparsity. ``datapaths``: the network's cost on every
    datapath, by name. ``pruning``: what pruning measured (see ``PRUNING_KEYS``).
    ``method_choice``: what a PTQ step's ``auto`` method ran (the method, and under a
    calibration time limit every candidate's validation figures); None without ``auto``.
    """

    key: str
    variant: str
    config: Mapping[str, Any]
    seed: int
    top1: float
    correct: int
    samples: int
    test_correct: PerImageCorrect | None
    val_top1: float
    subsets: Mapping[str, SubsetInfo]
    weight_sparsity: float
    captured_samples: int
    weight_density: float
    act_density: float
    effectual_mac_fraction: float
    layers: tuple[LayerSetting, ...]
    datapaths: Mapping[str, NetworkSummary]
    pruning: Mapping[str, Any]
    timing: Timing
    method_choice: Mapping[str, Any] | None = None

    def on(self, datapath: str) -> NetworkSummary:
        """The cost on ``datapath``; a ``ResultError`` naming the ones simulated otherwise."""
        if datapath not in self.datapaths:
            raise ResultError(
                f"variant {self.variant!r} was not simulated on {datapath!r} "
                f"(it has {', '.join(self.datapaths)})"
            )
        return self.datapaths[datapath]

    def summary_json(self) -> dict[str, Any]:
        """The ``results.json["variants"]`` entry: everything but the per-datapath costs (in
        ``points``), the timing (machine-dependent), the cache key and the per-image
        correctness (``variant.json`` only: ``results.json`` carries the tests made with it)."""
        return {
            "variant": self.variant,
            "config": self.config,
            "seed": self.seed,
            "top1": self.top1,
            "top1_ci95": top1_ci95(self.top1, self.samples),
            "correct": self.correct,
            "samples": self.samples,
            "val_top1": self.val_top1,
            "val_top1_ci95": top1_ci95(self.val_top1, self.subsets["validation"].size),
            "subsets": {purpose: info.to_dict() for purpose, info in self.subsets.items()},
            "weight_sparsity": self.weight_sparsity,
            "captured_samples": self.captured_samples,
            "weight_density": self.weight_density,
            "act_density": self.act_density,
            "effectual_mac_fraction": self.effectual_mac_fraction,
            "layers": [layer.to_json() for layer in self.layers],
            **self.pruning,
            **({"method_choice": self.method_choice} if self.method_choice is not None else {}),
        }

    def to_json(self, per_image: bool = True) -> dict[str, Any]:
        """The ``variant.json`` object; without ``test_correct`` when not ``per_image`` (the
        form ``results.json`` embeds)."""
        summary = self.summary_json()
        pruning = {k: summary.pop(k) for k in self.pruning}
        choice = {k: summary.pop(k) for k in ("method_choice",) if k in summary}
        if per_image:
            if self.test_correct is None:
                raise ResultError(f"variant {self.variant!r} has no per-image test correctness")
            at = list(summary).index("samples") + 1  # beside the counts it details
            items = list(summary.items())
            summary = dict(
                [*items[:at], ("test_correct", self.test_correct.to_json()), *items[at:]]
            )
        return {
            "key": self.key,
            **summary,
            "datapaths": {name: cost.to_json() for name, cost in self.datapaths.items()},
            **pruning,
            **choice,
            "timing": self.timing.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], per_image: bool = True) -> VariantResult:
        """The inverse of :meth:`to_json`; raises :class:`ResultError` for anything that is not
        exactly a ``variant.json`` object (``per_image``: ``test_correct`` required, and its
        count must be ``correct`` of ``samples``; otherwise it must be absent)."""
        scalars = (
            "key",
            "variant",
            "config",
            "seed",
            "top1",
            "correct",
            "samples",
            "val_top1",
            "weight_sparsity",
            "captured_samples",
            "weight_density",
            "act_density",
            "effectual_mac_fraction",
        )
        nested = ("subsets", "layers", "datapaths", "timing")
        nested += ("test_correct",) if per_image else ()
        # The intervals are derived from the counts, so they are recomputed, not read.
        derived = ("top1_ci95", "val_top1_ci95")
        check_json_keys(
            data,
            scalars + nested,
            "variant result",
            optional=(*PRUNING_KEYS, *derived, "method_choice"),
        )
        test_correct = PerImageCorrect.from_json(data["test_correct"]) if per_image else None
        if test_correct is not None and (test_correct.samples, test_correct.correct) != (
            data["samples"],
            data["correct"],
        ):
            raise ResultError(
                f"variant result: per-image correctness ({test_correct.correct} of "
                f"{test_correct.samples}) disagrees with correct/samples"
            )
        try:
            return cls(
                **{k: data[k] for k in scalars},
                test_correct=test_correct,
                subsets={k: SubsetInfo.from_dict(v) for k, v in data["subsets"].items()},
                layers=tuple(LayerSetting.from_json(row) for row in data["layers"]),
                datapaths={
                    name: NetworkSummary.from_json(cost) for name, cost in data["datapaths"].items()
                },
                pruning={k: data[k] for k in PRUNING_KEYS if k in data},
                timing=Timing.from_json(data["timing"]),
                method_choice=_method_choice(data.get("method_choice")),
            )
        except (CodesignError, AttributeError, TypeError, ValueError) as exc:
            raise ResultError(f"variant result: {exc}") from None


def _method_choice(data: Any) -> dict[str, Any] | None:
    """A stored ``method_choice``: absent, or an object naming the ``chosen`` method."""
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("chosen"), str):
        raise ResultError("variant result: method_choice must be an object naming 'chosen'")
    return data
