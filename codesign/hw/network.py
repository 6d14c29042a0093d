"""A network's cost on one datapath, per inference, with units and scope in every name.

Simulators see all captured samples of a layer as one batch (``LayerRecord.n``): their
cycles, action counts and energies are totals over that batch, and traffic that does not
grow with the batch (weights fetched once) is shared by its samples. ``NetworkCost`` divides
by the sample count, so its per-inference figures are those of a batch of ``samples``
inferences. Costs therefore add only when their sample counts match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from codesign.errors import HardwareError
from codesign.hw.records import LayerCost
from codesign.hw.summary import PJ_PER_UJ, LayerSummary, NetworkSummary

__all__ = ["PJ_PER_UJ", "NetworkCost", "layer_row"]


@dataclasses.dataclass(frozen=True, eq=False)
class NetworkCost:
    """Every layer's ``LayerCost`` on one datapath, captured over ``samples`` inputs.

    ``layers`` are in network order; every layer's record has ``n == samples``. Energies are
    in uJ per inference, cycles per inference.
    """

    layers: tuple[LayerCost, ...]
    samples: int

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise HardwareError(f"a network cost needs >= 1 captured sample, got {self.samples}")
        other = [c.record.name for c in self.layers if c.record.n != self.samples]
        if other:
            raise HardwareError(
                f"layers {', '.join(other)} were captured over another number of samples than "
                f"{self.samples}: capture every layer with the same forward loop"
            )

    @classmethod
    def of(cls, costs: Sequence[LayerCost]) -> NetworkCost:
        """The costs of one capture; the sample count is their records' ``n``."""
        if not costs:
            raise HardwareError("no layer costs: simulate at least one captured layer")
        return cls(tuple(costs), costs[0].record.n)

    def __add__(self, other: NetworkCost) -> NetworkCost:
        """Both networks' layers, e.g. two parts of one network captured together."""
        if not isinstance(other, NetworkCost):
            return NotImplemented
        if other.samples != self.samples:
            raise HardwareError(
                f"cannot add costs over {self.samples} and {other.samples} captured samples: "
                "per-inference figures depend on the batch the weights are shared by; "
                "capture both with the same number of samples"
            )
        return NetworkCost(self.layers + other.layers, self.samples)

    @property
    def energy_by_component_uj_per_inference(self) -> dict[str, float]:
        """uJ per inference by chip component, over all layers (components in first-seen order)."""
        total: dict[str, float] = {}
        for row in self.layer_rows():
            for component, uj in row["energy_by_component_uj_per_inference"].items():
                total[component] = total.get(component, 0.0) + uj
        return total

    @property
    def energy_uj_per_inference(self) -> float:
        return sum(self.energy_by_component_uj_per_inference.values())

    @property
    def layer_energy_uj_per_inference(self) -> dict[str, float]:
        """uJ per inference of each layer, by layer name."""
        return {c.record.name: c.energy_pj / PJ_PER_UJ / self.samples for c in self.layers}

    @property
    def cycles(self) -> float:
        """Cycles per inference: ``compute_cycles`` + ``stall_cycles``, layers in sequence."""
        return sum(c.cycles / self.samples for c in self.layers)

    @property
    def compute_cycles(self) -> float:
        return sum(c.compute_cycles / self.samples for c in self.layers)

    @property
    def stall_cycles(self) -> float:
        return sum(c.stall_cycles / self.samples for c in self.layers)

    @property
    def bops(self) -> int:
        """Bit operations per inference (dense MACs x weight bits x input bits, summed)."""
        return sum(c.record.dense_bops for c in self.layers) // self.samples

    @property
    def effectual_bops(self) -> float:
        """Bit operations per inference of the effectual MACs (both operands nonzero)."""
        return sum(c.record.effectual_bops for c in self.layers) / self.samples

    def totals(self) -> dict[str, Any]:
        """The whole network per inference: energy (uJ), its breakdown, cycles, bit
        operations (dense and effectual)."""
        return {
            "energy_uj_per_inference": self.energy_uj_per_inference,
            "energy_by_component_uj_per_inference": self.energy_by_component_uj_per_inference,
            "cycles": self.cycles,
            "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles,
            "bops": self.bops,
            "effectual_bops": self.effectual_bops,
        }

    def layer_rows(self) -> list[dict[str, Any]]:
        """One row per layer, per inference: MACs, widths, densities (fractions of nonzeros
        over the captured tensors), cycles, energy (uJ) and its breakdown, utilization."""
        return [layer_row(cost, self.samples) for cost in self.layers]

    def summary(self, datapath: str) -> NetworkSummary:
        """The typed per-inference totals and layer rows, under the datapath's name."""
        return NetworkSummary(
            datapath=datapath,
            **self.totals(),
            layers=tuple(LayerSummary.of(cost, self.samples) for cost in self.layers),
        )


def layer_row(cost: LayerCost, samples: int) -> dict[str, Any]:
    """One layer's row, its counts divided by the ``samples`` its record was captured over."""
    return LayerSummary.of(cost, samples).to_json()
