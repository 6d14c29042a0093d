"""Energy per action, every entry with its source; the table prices simulators' action counts.

Counting is separate from pricing (the Accelergy idea): simulators return ``Action`` counts
(multiplies and adds by operand width, register/SRAM/DRAM bits moved) and an ``EnergyTable``
turns them into picojoules, so a different table re-prices a result without re-simulating.

Rules for widths and sizes the sources do not list (documented here, tested in tests/hw):
- integer multiplier energy scales with the product of operand widths (array multiplier area
  ~ a*b), anchored at the nearest sourced width: E(a x b) = E(8x8) * a*b / 64 for widths up to
  16 bits, E(32x32) * a*b / 1024 above. Horowitz's own pair agrees: 0.2 pJ * 16 = 3.2 ~ 3.1 pJ.
- integer adder energy scales linearly with width (ripple/prefix adders ~ bits), anchored the
  same way: E(b) = E(8) * b / 8 up to 16 bits, E(32) * b / 32 above.
- floating point: fp16 and fp32 entries as sourced; other float widths use fp32.
- SRAM energy per bit is piecewise linear in log2(capacity) through the sourced points,
  extrapolated with the end segments and never below the register-file cost per bit.
- reads and writes cost the same (the sources give one figure per access).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

from codesign.errors import HardwareError
from codesign.hw.records import Action
from codesign.strict import (
    NOT_BLANK,
    NonNegativeFloat,
    PositiveInt,
    at,
    check_fields,
    check_schema_version,
    check_table,
    convert,
    from_dict,
    load_toml,
    to_dict,
)

SCHEMA_VERSION = 1

HOROWITZ = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
    "ISSCC 2014, Fig. 1.1.9, 45 nm 0.9 V"
)
EYERISS = (
    "Y.-H. Chen, J. Emer, V. Sze, 'Eyeriss: a spatial architecture for energy-efficient "
    "dataflow for CNNs', ISCA 2016, Fig. 1 (normalized energy: RF 1x, PE-to-PE 2x, "
    "global buffer 6x, DRAM 200x one 16-bit MAC)"
)


@dataclasses.dataclass(frozen=True)
class Sourced:
    """One energy figure in picojoules and where it comes from."""

    pj: NonNegativeFloat
    source: Annotated[str, NOT_BLANK]  # every figure cites where it comes from

    def __post_init__(self) -> None:
        check_fields(self, HardwareError)


@dataclasses.dataclass(frozen=True)
class SramPoint:
    """Energy of one 64-bit access to an SRAM of ``size_bytes``."""

    size_bytes: PositiveInt
    pj: NonNegativeFloat
    source: Annotated[str, NOT_BLANK]

    def __post_init__(self) -> None:
        check_fields(self, HardwareError)


@dataclasses.dataclass(frozen=True)
class EnergyTable:
    """Action -> pJ. Field names say the width the figure is for; see module rules for others."""

    name: str
    description: str
    int8_add: Sourced
    int32_add: Sourced
    int8_mult: Sourced
    int32_mult: Sourced
    fp16_add: Sourced
    fp16_mult: Sourced
    fp32_add: Sourced
    fp32_mult: Sourced
    register_16b: Sourced  # one 16-bit register-file access
    dram_64b: Sourced  # one 64-bit DRAM access
    sram_64b: tuple[SramPoint, ...]  # one 64-bit SRAM access by capacity, ascending
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_fields(self, HardwareError)
        sizes = [point.size_bytes for point in self.sram_64b]
        if not sizes or sizes != sorted(set(sizes)):
            raise HardwareError(
                f"energy table {self.name}: sram_64b needs at least one point, sizes strictly "
                f"ascending (got {sizes})"
            )

    # -- arithmetic ----------------------------------------------------------------------------
    def mult_pj(self, bits_a: int, bits_b: int, is_float: bool = False) -> float:
        """Energy of one multiply of a ``bits_a``-bit by a ``bits_b``-bit operand."""
        if is_float:
            return (self.fp16_mult if max(bits_a, bits_b) <= 16 else self.fp32_mult).pj
        if max(bits_a, bits_b) <= 16:
            return self.int8_mult.pj * bits_a * bits_b / 64.0
        return self.int32_mult.pj * bits_a * bits_b / 1024.0

    def add_pj(self, bits: int, is_float: bool = False) -> float:
        """Energy of one ``bits``-wide add (accumulation)."""
        if is_float:
            return (self.fp16_add if bits <= 16 else self.fp32_add).pj
        if bits <= 16:
            return self.int8_add.pj * bits / 8.0
        return self.int32_add.pj * bits / 32.0

    # -- storage, per bit moved ------------------------------------------------------------------
    def register_pj_per_bit(self) -> float:
        return self.register_16b.pj / 16.0

    def dram_pj_per_bit(self) -> float:
        return self.dram_64b.pj / 64.0

    def sram_pj_per_bit(self, size_bytes: int) -> float:
        """Piecewise linear in log2(size) through the sourced points; floor at a register."""
        points = self.sram_64b
        if len(points) == 1:
            return max(points[0].pj / 64.0, self.register_pj_per_bit())
        logs = [math.log2(point.size_bytes) for point in points]
        x = math.log2(max(size_bytes, 1))
        segment = 0
        while segment < len(points) - 2 and x > logs[segment + 1]:
            segment += 1
        x0, x1 = logs[segment], logs[segment + 1]
        y0, y1 = points[segment].pj, points[segment + 1].pj
        pj_64b = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return max(pj_64b / 64.0, self.register_pj_per_bit())

    # -- pricing ---------------------------------------------------------------------------------
    def action_pj(self, action: Action) -> float:
        """Total energy of one ``Action`` count in pJ."""
        if action.kind == "mult":
            unit = self.mult_pj(action.bits, action.bits_b or action.bits, action.is_float)
        elif action.kind == "add":
            unit = self.add_pj(action.bits, action.is_float)
        elif action.kind == "reg":
            unit = self.register_pj_per_bit()
        elif action.kind == "sram":
            unit = self.sram_pj_per_bit(action.size_bytes)
        elif action.kind == "dram":
            unit = self.dram_pj_per_bit()
        else:
            raise HardwareError(
                f"unknown action kind {action.kind!r}: use mult, add, reg, sram or dram"
            )
        return unit * float(action.count)

    def price(self, actions: Iterable[Action]) -> dict[str, float]:
        """Energy in pJ by component (insertion order of first appearance)."""
        by_component: dict[str, float] = {}
        for action in actions:
            by_component[action.component] = by_component.get(
                action.component, 0.0
            ) + self.action_pj(action)
        return by_component

    def to_dict(self) -> dict[str, Any]:
        """The file layout: ``entries`` in their own table (``energy_table_from_dict`` reads it)."""
        flat = to_dict(self)
        entries = {field: flat.pop(field) for field in ENTRY_FIELDS}
        return {**flat, "entries": entries}


def _horowitz(pj: float, what: str) -> Sourced:
    return Sourced(pj, f"{HOROWITZ}: {what}")


# Eyeriss prices a register-file access like one 16-bit MAC; priced here with Horowitz's
# 45 nm numbers by the module's width rules: 16x16 mult 0.2*256/64 = 0.8 pJ + 16-bit add 0.06.
_REGISTER_16B = Sourced(0.86, f"{EYERISS}; 1x = a 16-bit MAC at 45 nm = 0.8 + 0.06 pJ ({HOROWITZ})")


def horowitz45() -> EnergyTable:
    """The default 45 nm table (Horowitz ISSCC 2014); same figures as recipes/energy/horowitz45.toml."""
    return EnergyTable(
        name="horowitz45",
        description="45 nm, 0.9 V arithmetic and memory energies from Horowitz (ISSCC 2014)",
        int8_add=_horowitz(0.03, "8-bit int add 0.03 pJ"),
        int32_add=_horowitz(0.1, "32-bit int add 0.1 pJ"),
        int8_mult=_horowitz(0.2, "8-bit int mult 0.2 pJ"),
        int32_mult=_horowitz(3.1, "32-bit int mult 3.1 pJ"),
        fp16_add=_horowitz(0.4, "16-bit fp add 0.4 pJ"),
        fp16_mult=_horowitz(1.1, "16-bit fp mult 1.1 pJ"),
        fp32_add=_horowitz(0.9, "32-bit fp add 0.9 pJ"),
        fp32_mult=_horowitz(3.7, "32-bit fp mult 3.7 pJ"),
        register_16b=_REGISTER_16B,
        # DRAM: Horowitz gives 1.3-2.6 nJ per 64-bit access; we take the midpoint.
        dram_64b=_horowitz(1950.0, "DRAM 1.3-2.6 nJ per 64-bit access, midpoint 1.95 nJ"),
        sram_64b=(
            SramPoint(8 * 1024, 10.0, f"{HOROWITZ}: 64-bit read, 8 KB cache 10 pJ"),
            SramPoint(32 * 1024, 20.0, f"{HOROWITZ}: 64-bit read, 32 KB cache 20 pJ"),
            SramPoint(1024 * 1024, 100.0, f"{HOROWITZ}: 64-bit read, 1 MB cache 100 pJ"),
        ),
    )


ENTRY_FIELDS = (
    "int8_add",
    "int32_add",
    "int8_mult",
    "int32_mult",
    "fp16_add",
    "fp16_mult",
    "fp32_add",
    "fp32_mult",
    "register_16b",
    "dram_64b",
)


def energy_table_from_dict(data: Mapping[str, Any], where: str = "energy") -> EnergyTable:
    """Build a table from the TOML layout; every error names its TOML path.

    Layout: ``schema_version``, ``name``, ``description``, ``[entries]`` with one
    ``{pj, source}`` table per field of ``EnergyTable`` (``int8_add`` ... ``dram_64b``), and
    ``[[sram_64b]]`` points ``{size_bytes, pj, source}``.
    """
    check_schema_version(data, SCHEMA_VERSION, where, HardwareError)
    top = {"schema_version", "name", "description", "entries", "sram_64b"}
    check_table(data, top, where, HardwareError, required=top)
    inside = at(where, "entries")
    entries = check_table(data["entries"], ENTRY_FIELDS, inside, HardwareError, ENTRY_FIELDS)
    flat = {key: value for key, value in data.items() if key != "entries"}
    for field in ENTRY_FIELDS:  # each entry checked at its own path, then the whole table
        flat[field] = convert(entries[field], Sourced, at(inside, field), HardwareError)
    return from_dict(EnergyTable, flat, where, HardwareError)


def load_energy_table(path: str | Path | None = None) -> EnergyTable:
    """Read ``recipes/energy/<name>.toml``; ``None`` gives the built-in :func:`horowitz45`."""
    if path is None:
        return horowitz45()
    return energy_table_from_dict(load_toml(path, HardwareError), where=Path(path).name)
