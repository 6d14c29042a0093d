"""Typed, frozen hardware specs, loaded strictly from ``recipes/hardware/*.toml``.

Units are in field names (``_bytes``, ``_bits``, ``_bits_per_cycle``). ``kind`` picks the
simulator: ``systolic`` (SCALE-Sim-style rows x cols array), ``dense`` (a PE array of scalar,
vector, matrix-vector or matrix-matrix MAC units with a mapping search), ``scnn`` / ``dcnn``
(Parashar et al., ISCA 2017) and ``tensor_core`` (dense or 2:4 sparse). Field annotations
are the file format: ``codesign.strict`` checks every value against them (``schema_version``
at the top of every file; errors name the TOML path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from codesign.errors import HardwareError
from codesign.strict import (
    Count,
    PositiveFloat,
    PositiveInt,
    check_fields,
    check_schema_version,
    from_dict,
    load_toml,
)

SCHEMA_VERSION = 1
ArchKind = Literal["systolic", "dense", "scnn", "dcnn", "tensor_core"]
MacUnit = Literal["scalar", "vector", "matrix_vector", "matrix_matrix"]
Dataflow = Literal["ws", "os", "is", "os_lws", "ws_los"]
Objective = Literal["energy", "edp"]
ARCH_KINDS: tuple[str, ...] = get_args(ArchKind)
MAC_UNITS: tuple[str, ...] = get_args(MacUnit)
DATAFLOWS: tuple[str, ...] = get_args(Dataflow)
OBJECTIVES: tuple[str, ...] = get_args(Objective)


@dataclasses.dataclass(frozen=True)
class ComputeSpec:
    """The MAC datapath.

    A ``dense`` PE array has ``pes`` PEs, each one MAC unit doing per cycle
    ``vector_pixels`` x ``vector_outputs`` dot products of width ``vector_width`` (scalar:
    1x1x1; vector: 1x1xV; matrix-vector: 1xKvxV; matrix-matrix: MvxKvxV). A ``systolic``
    array is ``rows`` x ``cols`` scalar MACs. ``dataflow`` says which operand stays put:
    ws/os/is, or the two-level os_lws / ws_los (outer over the PE array / inner in a PE).
    ``zero_gating``: a MAC with a zero operand spends no multiplier/adder energy (still a cycle).
    """

    unit: MacUnit = "scalar"
    pes: PositiveInt = 1
    vector_width: PositiveInt = 1
    vector_outputs: PositiveInt = 1
    vector_pixels: PositiveInt = 1
    rows: PositiveInt = 1
    cols: PositiveInt = 1
    dataflow: Dataflow = "ws"
    zero_gating: bool = False
    accumulator_bits: PositiveInt = 32

    def __post_init__(self) -> None:
        check_fields(self, HardwareError)

    @property
    def unit_shape(self) -> tuple[int, int, int]:
        """(pixels, output channels, reduction lanes) one MAC unit covers per cycle."""
        if self.unit == "scalar":
            return 1, 1, 1
        if self.unit == "vector":
            return 1, 1, self.vector_width
        if self.unit == "matrix_vector":
            return 1, self.vector_outputs, self.vector_width
        return self.vector_pixels, self.vector_outputs, self.vector_width


@dataclasses.dataclass(frozen=True)
class MemorySpec:
    """Register file (per MAC unit) -> PE scratchpad (per PE) -> global buffer -> DRAM.

    ``spad_bytes = 0`` means no scratchpad level (a systolic array feeds PEs from the buffer).
    Bandwidths are bits per cycle between a level and the next one up (all PEs together for
    the scratchpad), and set the memory-bound stalls.
    """

    rf_bytes: PositiveInt = 64
    spad_bytes: Count = 0
    gbuf_bytes: PositiveInt = 256 * 1024
    spad_bits_per_cycle: PositiveFloat = 4096.0
    gbuf_bits_per_cycle: PositiveFloat = 1024.0
    dram_bits_per_cycle: PositiveFloat = 128.0

    def __post_init__(self) -> None:
        check_fields(self, HardwareError)


@dataclasses.dataclass(frozen=True)
class ScnnSpec:
    """SCNN / DCNN parameters; defaults are the paper's (Parashar et al., ISCA 2017, Table 3/4).

    8x8 PEs, each an F x I = 4x4 multiplier array, 32 accumulator banks, output channels
    processed in groups of ``kc``; IARAM/OARAM 10 KB each and a 50 KB weight FIFO per PE.
    ``compressed_dram``: DRAM traffic in the compressed (zero-run) format (SCNN, DCNN-opt).
    ``zero_gating``: a dense PE skips multiplier energy on zero operands (DCNN-opt).
    ``zero_run_bits``: width of the zero-run index stored beside each nonzero (paper: 4).
    ``xbar_queue_depth``: how far the scatter crossbar's queues spread bank conflicts; the
    paper gives no figure, so 8 is calibrated to its full-density result (SCNN at ~0.79x of
    DCNN's speed on dense layers): that one number is fitted, not predicted.
    """

    pe_rows: PositiveInt = 8
    pe_cols: PositiveInt = 8
    mult_f: PositiveInt = 4
    mult_i: PositiveInt = 4
    accumulator_banks: PositiveInt = 32
    kc: PositiveInt = 8
    iaram_bytes: PositiveInt = 10 * 1024
    oaram_bytes: PositiveInt = 10 * 1024
    weight_fifo_bytes: PositiveInt = 500  # 50 entries
    accumulator_bytes: PositiveInt = 6 * 1024
    zero_run_bits: PositiveInt = 4
    xbar_queue_depth: PositiveInt = 8
    compressed_dram: bool = True
    zero_gating: bool = False

    def __post_init__(self) -> None:
        check_fields(self, HardwareError)


@dataclasses.dataclass(frozen=True)
class TensorCoreSpec:
    """A matrix-matrix unit: each core does an m x n x k MMA per cycle (dense rate).

    With ``sparse_2of4`` a 2:4-compliant layer's reduction is halved (the pruned half of each
    group of 4 weights is skipped), doubling math throughput; ``metadata_bits`` (2) index each
    kept weight in storage and traffic. Non-compliant layers run at the dense rate.
    """

    cores: PositiveInt = 4
    m: PositiveInt = 8
    n: PositiveInt = 8
    k: PositiveInt = 16
    sparse_2of4: bool = False
    metadata_bits: PositiveInt = 2

    def __post_init__(self) -> None:
        check_fields(self, HardwareError)


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One accelerator. ``objective`` is what the mapping search minimises (energy or EDP)."""

    name: str
    kind: ArchKind
    description: str = ""
    objective: Objective = "energy"
    clock_mhz: PositiveFloat = 1000.0
    compute: ComputeSpec = ComputeSpec()
    memory: MemorySpec = MemorySpec()
    scnn: ScnnSpec = ScnnSpec()
    tensor_core: TensorCoreSpec = TensorCoreSpec()
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_fields(self, HardwareError)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def arch_from_dict(data: Mapping[str, Any], where: str = "arch") -> ArchSpec:
    """Build an ``ArchSpec`` from the TOML layout; every error names its TOML path."""
    check_schema_version(data, SCHEMA_VERSION, where, HardwareError)
    return from_dict(ArchSpec, data, where, HardwareError)


def load_arch(path: str | Path) -> ArchSpec:
    """Read ``recipes/hardware/<name>.toml`` into a frozen ``ArchSpec`` (strict keys and types)."""
    return arch_from_dict(load_toml(path, HardwareError), where=Path(path).name)
