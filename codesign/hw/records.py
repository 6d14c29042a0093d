"""The one record type that flows from capture to simulators to reports.

``LayerRecord`` holds a layer's workload as measured on real tensors: loop bounds, operand
widths and the nonzero statistics the sparse simulators need. ``LayerCost`` is what a
simulator returns for one record. Both are immutable; arrays inside are read-only numpy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def frozen_array(values: Any, dtype: Any = np.int64) -> np.ndarray:
    """A read-only numpy copy, so records stay immutable."""
    array = np.array(values, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class LayerRecord:
    """One Conv2d/Linear layer's captured workload.

    Loop bounds follow Timeloop/SCALE-Sim naming: N batch, K output channels, C input channels
    (per group), P x Q output pixels, R x S kernel, H x W input pixels (unpadded).
    A Linear layer is a 1x1 conv on a 1x1 image (P = Q = R = S = H = W = 1).

    Counts are over all ``n`` captured samples. Densities are fractions in [0, 1].
    ``input_nonzeros_per_tile`` has shape [N, C_total, tile_rows, tile_cols]: nonzero input
    activations in each planar tile of the (unpadded) input, for SCNN's PE grid: int16
    where a tile holds at most 32,767 pixels, else int32 (sum it with a wide ``dtype``).
    ``weight_nonzeros_per_kc`` has shape [K, C]: nonzero weights summed over R, S.
    """

    name: str
    op: str  # "conv" | "linear"
    n: int
    k: int
    c: int
    p: int
    q: int
    r: int
    s: int
    h: int
    w: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    weight_bits: int  # 32 means float
    input_bits: int  # 32 means float
    dense_macs: int
    weight_count: int
    weight_nonzeros: int
    input_count: int
    input_nonzeros: int
    effectual_macs: int  # MACs with both operands nonzero (padding counts as zero)
    input_nonzeros_per_tile: np.ndarray
    weight_nonzeros_per_kc: np.ndarray
    nm_compliant: bool  # every group of 4 consecutive input channels keeps <= 2 nonzeros
    input_signed: bool = False

    @property
    def weight_density(self) -> float:
        return self.weight_nonzeros / max(self.weight_count, 1)

    @property
    def act_density(self) -> float:
        return self.input_nonzeros / max(self.input_count, 1)

    @property
    def macs_per_sample(self) -> int:
        return self.dense_macs // max(self.n, 1)

    @property
    def dense_bops(self) -> int:
        """Bit operations over all ``n`` samples: dense MACs x weight bits x input bits
        (Baskin et al., "UNIQ", 2021; van Baalen et al., "Bayesian Bits", 2020). A float
        layer counts 32 x 32."""
        return self.dense_macs * self.weight_bits * self.input_bits

    @property
    def effectual_bops(self) -> int:
        """Bit operations of the effectual MACs only (both operands nonzero, as measured):
        what a datapath that skips every zero operand still computes."""
        return self.effectual_macs * self.weight_bits * self.input_bits


# Kinds of priced actions. Arithmetic counts are operations; storage counts are bits moved.
ACTION_KINDS = ("mult", "add", "reg", "sram", "dram")


@dataclasses.dataclass(frozen=True)
class Action:
    """One kind of hardware event and how often it happened (Accelergy-style action count).

    ``kind`` is one of ``ACTION_KINDS``. For ``mult``/``add``, ``count`` is operations and
    ``bits``/``bits_b`` the operand widths (``is_float`` selects the floating-point entry).
    For ``reg``/``sram``/``dram``, ``count`` is bits moved; ``size_bytes`` is the SRAM's
    capacity (its energy per bit depends on it); ``direction`` is "read" or "write".
    ``component`` names the part of the chip for the energy breakdown ("mac", "rf", "gbuf", ...).
    """

    component: str
    kind: str
    count: float
    bits: int = 0
    bits_b: int = 0
    is_float: bool = False
    size_bytes: int = 0
    direction: str = ""


@dataclasses.dataclass(frozen=True, eq=False)
class LayerCost:
    """What one simulator says about one layer.

    ``cycles`` = ``compute_cycles`` + ``stall_cycles`` (memory-bound stalls from bandwidth).
    ``utilization`` is useful MACs / (peak MACs per cycle x cycles). ``actions`` are the counts
    the energy table priced into ``energy_pj_by_component``; re-pricing with another table
    (:func:`codesign.hw.simulate.reprice`) needs no re-simulation. ``details`` holds the
    chosen mapping and per-level traffic (JSON-able scalars only).
    """

    record: LayerRecord
    simulator: str
    compute_cycles: float
    stall_cycles: float
    utilization: float
    actions: tuple[Action, ...]
    energy_pj_by_component: dict[str, float]
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def cycles(self) -> float:
        return self.compute_cycles + self.stall_cycles

    @property
    def energy_pj(self) -> float:
        return float(sum(self.energy_pj_by_component.values()))
