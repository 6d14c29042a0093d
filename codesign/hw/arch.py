"""Typed, frozen hardware specs, loaded strictly from ``recipes/hardware/*.toml``.

Units are in field names (``_bytes``, ``_bits``, ``_bits_per_cycle``). ``kind`` picks the
simulator: ``systolic`` (SCALE-Sim-style rows x cols array), ``dense`` (a PE array of scalar,
vector, matrix-vector or matrix-matrix MAC units with a mapping search), ``scnn`` / ``dcnn``
(Parashar et al., ISCA 2017) and ``tensor_core`` (dense or 2:4 sparse).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codesign.config import load_toml
from codesign.errors import CodesignError, HardwareError
from codesign.hw.strict import built, check_keys

ARCH_KINDS = ("systolic", "dense", "scnn", "dcnn", "tensor_core")
MAC_UNITS = ("scalar", "vector", "matrix_vector", "matrix_matrix")
DATAFLOWS = ("ws", "os", "is", "os_lws", "ws_los")
OBJECTIVES = ("energy", "edp")


def _positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise HardwareError(f"{name} must be a positive number, got {value!r}")


def _choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise HardwareError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")


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

    unit: str = "scalar"
    pes: int = 1
    vector_width: int = 1
    vector_outputs: int = 1
    vector_pixels: int = 1
    rows: int = 1
    cols: int = 1
    dataflow: str = "ws"
    zero_gating: bool = False
    accumulator_bits: int = 32

    def __post_init__(self) -> None:
        _choice(self.unit, "compute.unit", MAC_UNITS)
        _choice(self.dataflow, "compute.dataflow", DATAFLOWS)
        for name in ("pes", "vector_width", "vector_outputs", "vector_pixels", "rows", "cols"):
            _positive(getattr(self, name), f"compute.{name}")
        _positive(self.accumulator_bits, "compute.accumulator_bits")

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

    rf_bytes: int = 64
    spad_bytes: int = 0
    gbuf_bytes: int = 256 * 1024
    spad_bits_per_cycle: float = 4096.0
    gbuf_bits_per_cycle: float = 1024.0
    dram_bits_per_cycle: float = 128.0

    def __post_init__(self) -> None:
        for name in ("rf_bytes", "gbuf_bytes", "spad_bits_per_cycle", "gbuf_bits_per_cycle"):
            _positive(getattr(self, name), f"memory.{name}")
        _positive(self.dram_bits_per_cycle, "memory.dram_bits_per_cycle")
        if self.spad_bytes < 0:
            raise HardwareError(f"memory.spad_bytes must be >= 0, got {self.spad_bytes}")


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

    pe_rows: int = 8
    pe_cols: int = 8
    mult_f: int = 4
    mult_i: int = 4
    accumulator_banks: int = 32
    kc: int = 8
    iaram_bytes: int = 10 * 1024
    oaram_bytes: int = 10 * 1024
    weight_fifo_bytes: int = 500  # 50 entries
    accumulator_bytes: int = 6 * 1024
    zero_run_bits: int = 4
    xbar_queue_depth: int = 8
    compressed_dram: bool = True
    zero_gating: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, bool):
                _positive(value, f"scnn.{field.name}")


@dataclasses.dataclass(frozen=True)
class TensorCoreSpec:
    """A matrix-matrix unit: each core does an m x n x k MMA per cycle (dense rate).

    With ``sparse_2of4`` a 2:4-compliant layer's reduction is halved (the pruned half of each
    group of 4 weights is skipped), doubling math throughput; ``metadata_bits`` (2) index each
    kept weight in storage and traffic. Non-compliant layers run at the dense rate.
    """

    cores: int = 4
    m: int = 8
    n: int = 8
    k: int = 16
    sparse_2of4: bool = False
    metadata_bits: int = 2

    def __post_init__(self) -> None:
        for name in ("cores", "m", "n", "k", "metadata_bits"):
            _positive(getattr(self, name), f"tensor_core.{name}")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One accelerator. ``objective`` is what the mapping search minimises (energy or EDP)."""

    name: str
    kind: str
    description: str = ""
    objective: str = "energy"
    clock_mhz: float = 1000.0
    compute: ComputeSpec = ComputeSpec()
    memory: MemorySpec = MemorySpec()
    scnn: ScnnSpec = ScnnSpec()
    tensor_core: TensorCoreSpec = TensorCoreSpec()

    def __post_init__(self) -> None:
        _choice(self.kind, "kind", ARCH_KINDS)
        _choice(self.objective, "objective", OBJECTIVES)
        _positive(self.clock_mhz, "clock_mhz")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {
    "compute": ComputeSpec,
    "memory": MemorySpec,
    "scnn": ScnnSpec,
    "tensor_core": TensorCoreSpec,
}


def _section(cls: type, data: Any, where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(data, set(fields), where)
    for name, value in data.items():
        expected = type(getattr(cls(), name))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise HardwareError(
                f"{where}.{name} must be {expected.__name__}, got {type(value).__name__} {value!r}"
            )
    return built(lambda: cls(**data), where)


def arch_from_dict(data: Mapping[str, Any], where: str = "arch") -> ArchSpec:
    """Build an ``ArchSpec`` from the TOML layout; unknown keys name their TOML path."""
    top = {"name", "kind", "description", "objective", "clock_mhz", *_SECTIONS}
    check_keys(data, top, where, required={"name", "kind"})
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            kwargs[key] = _section(_SECTIONS[key], value, f"{where}.{key}")
        else:
            kwargs[key] = value
    return built(lambda: ArchSpec(**kwargs), where)


def load_arch(path: str | Path) -> ArchSpec:
    """Read ``recipes/hardware/<name>.toml`` into a frozen ``ArchSpec`` (strict keys)."""
    try:
        data = load_toml(path)
    except CodesignError as exc:
        raise HardwareError(str(exc)) from None
    return arch_from_dict(data, where=Path(path).name)
