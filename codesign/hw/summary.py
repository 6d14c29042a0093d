"""Typed per-inference summaries of a network's cost on one datapath, and their JSON form.

``NetworkCost`` holds the simulators' ``LayerCost``s; a summary keeps only the per-inference
figures results record (``variant.json``'s ``datapaths``, ``codesign simulate``'s layer rows),
so a result read back from disk has the same type as one just simulated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from codesign.hw.records import LayerCost
from codesign.io import check_json_keys

PJ_PER_UJ = 1e6


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """One layer per inference: MACs (dense and effectual), operand widths (bits), bit
    operations (``bops`` = MACs x weight bits x activation bits, ``effectual_bops`` the same
    over the effectual MACs), measured densities (nonzeros / elements over the captured
    tensors), cycles, energy (uJ) and its breakdown by chip component, utilization (useful
    MACs / peak MACs x cycles)."""

    name: str
    macs: int
    effectual_macs: float
    weight_bits: int
    act_bits: int
    bops: int
    effectual_bops: float
    weight_density: float
    act_density: float
    cycles: float
    compute_cycles: float
    stall_cycles: float
    energy_uj_per_inference: float
    energy_by_component_uj_per_inference: Mapping[str, float]
    utilization: float

    @classmethod
    def of(cls, cost: LayerCost, samples: int) -> LayerSummary:
        """``cost``'s counts divided by the ``samples`` its record was captured over."""
        record = cost.record
        return cls(
            name=record.name,
            macs=record.dense_macs // samples,
            effectual_macs=record.effectual_macs / samples,
            weight_bits=record.weight_bits,
            act_bits=record.input_bits,
            bops=record.dense_bops // samples,
            effectual_bops=record.effectual_bops / samples,
            weight_density=record.weight_density,
            act_density=record.act_density,
            cycles=cost.cycles / samples,
            compute_cycles=cost.compute_cycles / samples,
            stall_cycles=cost.stall_cycles / samples,
            energy_uj_per_inference=cost.energy_pj / PJ_PER_UJ / samples,
            energy_by_component_uj_per_inference={
                k: v / PJ_PER_UJ / samples for k, v in cost.energy_pj_by_component.items()
            },
            utilization=cost.utilization,
        )

    def to_json(self) -> dict[str, Any]:
        # shallow (asdict deep-copies): every field is a scalar but the breakdown, copied here
        row = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        row["energy_by_component_uj_per_inference"] = dict(
            self.energy_by_component_uj_per_inference
        )
        return row

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LayerSummary:
        fields = tuple(f.name for f in dataclasses.fields(cls))
        check_json_keys(data, fields, "layer row")
        return cls(
            **{
                **data,
                "energy_by_component_uj_per_inference": dict(
                    data["energy_by_component_uj_per_inference"]
                ),
            }
        )


@dataclasses.dataclass(frozen=True)
class NetworkSummary:
    """A whole network on one datapath, per inference: energy (uJ) and its breakdown by
    component, cycles (``compute_cycles`` + ``stall_cycles``, layers in sequence), bit
    operations (``bops`` dense, ``effectual_bops`` after measured zeros; the sums of the
    layers'), and one :class:`LayerSummary` per layer in network order."""

    datapath: str
    energy_uj_per_inference: float
    energy_by_component_uj_per_inference: Mapping[str, float]
    cycles: float
    compute_cycles: float
    stall_cycles: float
    bops: int
    effectual_bops: float
    layers: tuple[LayerSummary, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "datapath": self.datapath,
            "energy_uj_per_inference": self.energy_uj_per_inference,
            "energy_by_component_uj_per_inference": dict(self.energy_by_component_uj_per_inference),
            "cycles": self.cycles,
            "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles,
            "bops": self.bops,
            "effectual_bops": self.effectual_bops,
            "layers": [layer.to_json() for layer in self.layers],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NetworkSummary:
        fields = tuple(f.name for f in dataclasses.fields(cls))
        check_json_keys(data, fields, "datapath summary")
        return cls(
            **{
                **data,
                "energy_by_component_uj_per_inference": dict(
                    data["energy_by_component_uj_per_inference"]
                ),
                "layers": tuple(LayerSummary.from_json(row) for row in data["layers"]),
            }
        )
