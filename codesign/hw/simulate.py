"""Records + arch + energy table -> per-layer costs -> the result.json / layers.csv shapes."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Callable, Sequence
from typing import Any

from codesign.errors import HardwareError
from codesign.hw.arch import ArchSpec
from codesign.hw.dense import simulate_dense
from codesign.hw.energy import EnergyTable, horowitz45
from codesign.hw.network import NetworkCost
from codesign.hw.records import LayerCost, LayerRecord
from codesign.hw.scnn import simulate_dcnn, simulate_scnn
from codesign.hw.sparse_tc import simulate_tensor_core
from codesign.hw.systolic import simulate_systolic
from codesign.io import csv_safe, write_text_atomic

SIMULATORS: dict[str, Callable[[LayerRecord, ArchSpec, EnergyTable], LayerCost]] = {
    "systolic": simulate_systolic,
    "dense": simulate_dense,
    "scnn": simulate_scnn,
    "dcnn": simulate_dcnn,
    "tensor_core": simulate_tensor_core,
}


def simulate(
    records: Sequence[LayerRecord], arch: ArchSpec, energy: EnergyTable | None = None
) -> list[LayerCost]:
    """Simulate every layer on ``arch`` and price it with ``energy`` (default: horowitz45)."""
    if not records:
        raise HardwareError(
            "no layer records to simulate: capture a model with Conv2d/Linear layers"
        )
    table = energy if energy is not None else horowitz45()
    simulator = SIMULATORS[arch.kind]
    return [simulator(record, arch, table) for record in records]


def reprice(costs: Sequence[LayerCost], energy: EnergyTable) -> list[LayerCost]:
    """The same action counts priced with another table (no re-simulation).

    The mapping chosen for dense PE arrays stays the one found under the original table.
    """
    return [
        dataclasses.replace(cost, energy_pj_by_component=energy.price(cost.actions))
        for cost in costs
    ]


def summarize(costs: Sequence[LayerCost], arch_name: str | None = None) -> dict[str, Any]:
    """The result.json shape: per-inference totals (with the captured ``samples``) and one row
    per layer (see :class:`codesign.hw.network.NetworkCost`)."""
    network = NetworkCost.of(costs)
    return {
        "arch": arch_name if arch_name is not None else costs[0].simulator,
        "total": {"samples": network.samples, **network.totals()},
        "layers": network.layer_rows(),
    }


CSV_COLUMNS = (
    "name",
    "simulator",
    "macs",
    "effectual_macs",
    "weight_bits",
    "act_bits",
    "bops",
    "effectual_bops",
    "weight_density",
    "act_density",
    "cycles",
    "compute_cycles",
    "stall_cycles",
    "energy_uj_per_inference",
    "utilization",
)


def write_layers_csv(costs: Sequence[LayerCost], path: str | os.PathLike[str]) -> None:
    """One row per layer, per inference (``CSV_COLUMNS``, then ``energy_<component>_uj_per_inference``),
    written atomically."""
    network = NetworkCost.of(costs)
    components: list[str] = []
    for cost in costs:
        components += [c for c in cost.energy_pj_by_component if c not in components]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"energy_{c}_uj_per_inference" for c in components)])
    for cost, row in zip(costs, network.layer_rows(), strict=True):
        by_component = row["energy_by_component_uj_per_inference"]
        writer.writerow(
            [csv_safe(cost.simulator if c == "simulator" else row[c]) for c in CSV_COLUMNS]
            + [by_component.get(c, 0.0) for c in components]
        )
    write_text_atomic(path, buffer.getvalue())
