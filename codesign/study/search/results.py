"""The search's outcome as frozen values, and their JSON form (``results.json["search"]``).

``to_json`` writes the keys the search has always written, in the same order, then
``prediction`` (derived from the verified configurations); ``from_json`` reads them back (the seed-spread study reads a finished search this way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from codesign.data.subsets import SubsetInfo
from codesign.errors import CodesignError, ResultError
from codesign.io import check_json_keys
from codesign.pipeline.results import Timing, VariantResult
from codesign.report.claims import Claim
from codesign.stats import top1_ci95
from codesign.study.search.agreement import prediction_agreement
from codesign.study.search.options import Option


@dataclasses.dataclass(frozen=True)
class LayerChoice:
    """The option a configuration gives one layer."""

    name: str
    weight_bits: int
    act_bits: int
    sparsity: str

    @property
    def option(self) -> Option:
        return Option(self.weight_bits, self.act_bits, self.sparsity)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FrontEntry:
    """One predicted configuration: validation top-1 (%), energy (uJ per inference, the
    layers outside the search included) and the option label of every searchable layer."""

    predicted_top1: float
    predicted_energy_uj_per_inference: float
    choices: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "choices": list(self.choices)}


PREDICTION_KEYS = (
    "predicted_top1",
    "predicted_energy_uj_per_inference",
    "choices",
    "dominates",
    "dominance_tests",
    "chosen",
    "meets_constraint",
)


@dataclasses.dataclass(frozen=True)
class VerifiedConfiguration:
    """A front entry built and measured like any recipe variant (``result``), with what was
    predicted for it (validation top-1 %, uJ per inference), its per-layer choices, the
    recipe variants it dominates on the search datapath (strictly less energy, at least their
    test top-1) with the paired test of each (``dominance_tests``, in the same order), whether
    it is the chosen one and whether it meets the constraint.

    In ``results.json`` it carries neither its per-image vector nor its timing (machine-
    dependent): read back, ``result.test_correct`` is None and the timing zero."""

    result: VariantResult
    predicted_top1: float
    predicted_energy_uj_per_inference: float
    choices: tuple[LayerChoice, ...]
    dominates: tuple[str, ...]
    dominance_tests: tuple[Claim, ...]
    chosen: bool
    meets_constraint: bool

    def to_json(self) -> dict[str, Any]:
        result = self.result.to_json(per_image=False)
        del result["timing"]
        return {
            **result,
            "predicted_top1": self.predicted_top1,
            "predicted_energy_uj_per_inference": self.predicted_energy_uj_per_inference,
            "choices": [c.to_json() for c in self.choices],
            "dominates": list(self.dominates),
            "dominance_tests": [c.to_json() for c in self.dominance_tests],
            "chosen": self.chosen,
            "meets_constraint": self.meets_constraint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VerifiedConfiguration:
        missing = [k for k in PREDICTION_KEYS if k not in data]
        if missing:
            raise ResultError(f"verified configuration: missing keys {missing}")
        result = VariantResult.from_json(
            {
                "timing": Timing(0.0, 0.0, 0.0).to_json(),
                **{k: v for k, v in data.items() if k not in PREDICTION_KEYS},
            },
            per_image=False,
        )
        try:
            choices = []
            for choice in data["choices"]:
                check_json_keys(choice, ("name", "weight_bits", "act_bits", "sparsity"), "choice")
                choices.append(LayerChoice(**choice))
            return cls(
                result=result,
                predicted_top1=data["predicted_top1"],
                predicted_energy_uj_per_inference=data["predicted_energy_uj_per_inference"],
                choices=tuple(choices),
                dominates=tuple(data["dominates"]),
                dominance_tests=tuple(Claim.from_json(c) for c in data["dominance_tests"]),
                chosen=data["chosen"],
                meets_constraint=data["meets_constraint"],
            )
        except (CodesignError, TypeError) as exc:
            raise ResultError(f"verified configuration: {exc}") from None


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What the search found: its objective, the datapath whose energy it minimised, the
    sensitivity images (``sensitivity_samples`` of the validation split) and the reference's
    top-1 on them and on the whole validation split (%), the option labels and searchable
    layers with the measured tables ([layers, options]: drops in points, energies in uJ per
    inference), the predicted front, the chosen configuration's name (None when no build met
    the constraint) and every verified configuration, by front index. ``uniform_val_top1``:
    each option's uniform model's validation top-1 (%), which scales that option's drops."""

    objective: str
    datapath: str
    sensitivity_samples: int
    validation_subset: SubsetInfo
    sensitivity_subset: SubsetInfo
    reference_top1_sensitivity: float
    reference_val_top1: float
    options: tuple[str, ...]
    layers: tuple[str, ...]
    sensitivity_drop_points: tuple[tuple[float, ...], ...]
    layer_energy_uj_per_inference: tuple[tuple[float, ...], ...]
    front: tuple[FrontEntry, ...]
    chosen: str | None
    verified: tuple[VerifiedConfiguration, ...]
    uniform_val_top1: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "datapath": self.datapath,
            "sensitivity_samples": self.sensitivity_samples,
            "subsets": {
                "validation": self.validation_subset.to_dict(),
                "sensitivity": self.sensitivity_subset.to_dict(),
            },
            "reference_top1_sensitivity": self.reference_top1_sensitivity,
            "reference_top1_sensitivity_ci95": top1_ci95(
                self.reference_top1_sensitivity, self.sensitivity_subset.size
            ),
            "reference_val_top1": self.reference_val_top1,
            "reference_val_top1_ci95": top1_ci95(
                self.reference_val_top1, self.validation_subset.size
            ),
            "options": list(self.options),
            "layers": list(self.layers),
            "sensitivity_drop_points": [list(row) for row in self.sensitivity_drop_points],
            "layer_energy_uj_per_inference": [
                list(row) for row in self.layer_energy_uj_per_inference
            ],
            "front": [entry.to_json() for entry in self.front],
            "chosen": self.chosen,
            "verified": [v.to_json() for v in self.verified],
            "uniform_val_top1": list(self.uniform_val_top1),
            "prediction": self.prediction(),
        }

    def prediction(self) -> dict[str, Any]:
        """How the predictions held over the verified configurations: predicted against
        verified validation top-1, their mean absolute error (points) and rank correlation
        (:func:`~codesign.study.search.agreement.prediction_agreement`)."""
        return prediction_agreement(
            [v.predicted_top1 for v in self.verified], [v.result.val_top1 for v in self.verified]
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchResult:
        keys = (
            "objective",
            "datapath",
            "sensitivity_samples",
            "subsets",
            "reference_top1_sensitivity",
            "reference_val_top1",
            "options",
            "layers",
            "sensitivity_drop_points",
            "layer_energy_uj_per_inference",
            "front",
            "chosen",
            "verified",
        )
        # The intervals and the prediction figures are derived from the rest: recomputed.
        derived = ("reference_top1_sensitivity_ci95", "reference_val_top1_ci95", "prediction")
        check_json_keys(data, keys, "search", optional=(*derived, "uniform_val_top1"))
        try:
            subsets = data["subsets"]
            front = []
            for entry in data["front"]:
                check_json_keys(
                    entry, tuple(f.name for f in dataclasses.fields(FrontEntry)), "front"
                )
                front.append(FrontEntry(**{**entry, "choices": tuple(entry["choices"])}))
            return cls(
                objective=data["objective"],
                datapath=data["datapath"],
                sensitivity_samples=data["sensitivity_samples"],
                validation_subset=SubsetInfo.from_dict(subsets["validation"]),
                sensitivity_subset=SubsetInfo.from_dict(subsets["sensitivity"]),
                reference_top1_sensitivity=data["reference_top1_sensitivity"],
                reference_val_top1=data["reference_val_top1"],
                options=tuple(data["options"]),
                layers=tuple(data["layers"]),
                sensitivity_drop_points=tuple(map(tuple, data["sensitivity_drop_points"])),
                layer_energy_uj_per_inference=tuple(
                    map(tuple, data["layer_energy_uj_per_inference"])
                ),
                front=tuple(front),
                chosen=data["chosen"],
                verified=tuple(VerifiedConfiguration.from_json(v) for v in data["verified"]),
                uniform_val_top1=tuple(data.get("uniform_val_top1", ())),
            )
        except (CodesignError, KeyError, TypeError) as exc:
            raise ResultError(f"search: {exc}") from None
