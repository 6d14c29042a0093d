"""Shared pieces of every simulator: operand widths, MAC actions, building a ``LayerCost``."""

from __future__ import annotations

import dataclasses
from typing import Any

from codesign.hw.energy import EnergyTable
from codesign.hw.records import Action, LayerCost, LayerRecord

FLOAT_BITS = 32


@dataclasses.dataclass(frozen=True)
class Widths:
    """Operand widths in bits for one layer on one datapath."""

    weight_bits: int
    input_bits: int
    accumulator_bits: int
    output_bits: int
    is_float: bool

    @classmethod
    def of(cls, record: LayerRecord, accumulator_bits: int = 32) -> Widths:
        # A layer without integer widths computes in fp32 and accumulates in fp32.
        is_float = record.weight_bits >= FLOAT_BITS and record.input_bits >= FLOAT_BITS
        acc = FLOAT_BITS if is_float else accumulator_bits
        # The output is stored at the activation width this layer reads (the next layer
        # re-quantizes it); a float layer stores fp32.
        return cls(record.weight_bits, record.input_bits, acc, record.input_bits, is_float)


def mac_actions(
    record: LayerRecord, widths: Widths, gated: bool, component: str = "mac"
) -> list[Action]:
    """Multiplies and accumulates: all dense MACs, or only effectual ones when zero-gated.

    A gated MAC (a zero operand detected) still takes its cycle but toggles neither the
    multiplier nor the adder, so it spends no arithmetic energy.
    """
    count = record.effectual_macs if gated else record.dense_macs
    return [
        Action(component, "mult", count, widths.weight_bits, widths.input_bits, widths.is_float),
        Action(component, "add", count, widths.accumulator_bits, 0, widths.is_float),
    ]


def storage(component: str, kind: str, direction: str, bits: float, size_bytes: int = 0) -> Action:
    return Action(component, kind, float(bits), size_bytes=size_bytes, direction=direction)


def make_cost(
    record: LayerRecord,
    simulator: str,
    table: EnergyTable,
    compute_cycles: float,
    memory_cycles: float,
    peak_macs_per_cycle: float,
    actions: list[Action],
    details: dict[str, Any],
) -> LayerCost:
    """Assemble a ``LayerCost``; stalls are memory time not hidden under compute (double buffering)."""
    stall = max(0.0, float(memory_cycles) - float(compute_cycles))
    cycles = float(compute_cycles) + stall
    utilization = record.dense_macs / (peak_macs_per_cycle * cycles) if cycles > 0 else 0.0
    return LayerCost(
        record=record,
        simulator=simulator,
        compute_cycles=float(compute_cycles),
        stall_cycles=stall,
        utilization=float(min(utilization, 1.0)),
        actions=tuple(actions),
        energy_pj_by_component=table.price(actions),
        details=details,
    )


def traffic_details(actions: list[Action]) -> dict[str, float]:
    """Bits read/written per storage component, e.g. ``{"gbuf_read_bits": ...}``."""
    out: dict[str, float] = {}
    for action in actions:
        if action.kind in ("reg", "sram", "dram"):
            key = f"{action.component}_{action.direction}_bits"
            out[key] = out.get(key, 0.0) + float(action.count)
    return out
