"""The search's outcome as frozen values, and their JSON form (``results.json["search"]``).

``to_json`` writes exactly the keys the search has always written, in the same order;
``from_json`` reads them back (the seed-spread study reads a finished search this way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from codesign.data.subsets import SubsetInfo
from codesign.errors import CodesignError, ResultError
from codesign.io import check_json_keys
from codesign.pipeline.results import VariantResult
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
    "chosen",
    "meets_constraint",
)


@dataclasses.dataclass(frozen=True)
class VerifiedConfiguration:
    """A front entry built and measured like any recipe variant (``result``), with what was
    predicted for it (validation top-1 %, uJ per inference), its per-layer choices, the
    recipe variants it dominates on the search datapath (strictly less energy, at least their
    test top-1), whether it is the chosen one and whether it meets the constraint."""

    result: VariantResult
    predicted_top1: float
    predicted_energy_uj_per_inference: float
    choices: tuple[LayerChoice, ...]
    dominates: tuple[str, ...]
    chosen: bool
    meets_constraint: bool

    def to_json(self) -> dict[str, Any]:
        return {
            **self.result.to_json(),
            "predicted_top1": self.predicted_top1,
            "predicted_energy_uj_per_inference": self.predicted_energy_uj_per_inference,
            "choices": [c.to_json() for c in self.choices],
            "dominates": list(self.dominates),
            "chosen": self.chosen,
            "meets_constraint": self.meets_constraint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VerifiedConfiguration:
        missing = [k for k in PREDICTION_KEYS if k not in data]
        if missing:
            raise ResultError(f"verified configuration: missing keys {missing}")
        result = VariantResult.from_json(
            {k: v for k, v in data.items() if k not in PREDICTION_KEYS}
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
    the constraint) and every verified configuration, by front index."""

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
            "reference_val_top1": self.reference_val_top1,
            "options": list(self.options),
            "layers": list(self.layers),
            "sensitivity_drop_points": [list(row) for row in self.sensitivity_drop_points],
            "layer_energy_uj_per_inference": [
                list(row) for row in self.layer_energy_uj_per_inference
            ],
            "front": [entry.to_json() for entry in self.front],
            "chosen": self.chosen,
            "verified": [v.to_json() for v in self.verified],
        }

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
        check_json_keys(data, keys, "search")
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
            )
        except (CodesignError, KeyError, TypeError) as exc:
            raise ResultError(f"search: {exc}") from None
