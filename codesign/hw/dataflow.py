"""Loop-nest reuse arithmetic for a layer seen as a GEMM, vectorised over candidate tilings.

A conv layer (per group) is the GEMM ``out[m, k] += in[m, r] * w[k, r]`` with M = N*P*Q output
pixels, K output channels and R = C*R*S reduction terms (im2col view, as SCALE-Sim and
Timeloop use). A memory level holding a tile (tm, tk, tr) inside its parent's tile walks the
parent with a loop order; an operand's tile is (re)loaded once per iteration of every loop
down to the innermost loop that indexes it: loops inside that one do not touch the operand,
so it stays put (that is the dataflow's "stationary" operand).

Dataflows name the innermost loop: weight-stationary keeps (k, r) and loops m innermost,
output-stationary keeps (m, k) and loops r innermost, input-stationary keeps (m, r) and loops
k innermost. Two-level dataflows (MAGNet, Venkatesan et al. ICCAD 2019) use one order between
the global buffer and the PEs and another inside a PE: OS-LWS = output-stationary outside,
local weight-stationary inside; WS-LOS the converse.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from codesign.hw.records import LayerRecord

# Loop orders, outermost first, over the GEMM dims "m", "k", "r".
ORDERS = {
    "ws": ("k", "r", "m"),
    "os": ("k", "m", "r"),
    "is": ("m", "r", "k"),
}
# (outer order: DRAM -> global buffer -> PE array, inner order: PE storage -> MAC unit)
DATAFLOW_ORDERS = {
    "ws": ("ws", "ws"),
    "os": ("os", "os"),
    "is": ("is", "is"),
    "os_lws": ("os", "ws"),
    "ws_los": ("ws", "os"),
}
OPERAND_DIMS = {"input": ("m", "r"), "weight": ("k", "r"), "output": ("m", "k")}


@dataclasses.dataclass(frozen=True)
class Gemm:
    """A layer as ``groups`` independent GEMMs of M x K x R, plus the conv geometry."""

    m: int
    k: int
    r: int
    groups: int
    # conv geometry for input footprints (a tile of output pixels needs a halo of inputs)
    p: int
    q: int
    kernel_r: int
    kernel_s: int
    stride: int
    h_padded: int
    w_padded: int

    @classmethod
    def of(cls, record: LayerRecord) -> Gemm:
        return cls(
            m=record.n * record.p * record.q,
            k=record.k // record.groups,
            r=record.c * record.r * record.s,
            groups=record.groups,
            p=record.p,
            q=record.q,
            kernel_r=record.r,
            kernel_s=record.s,
            stride=record.stride[0],
            h_padded=record.h + 2 * record.padding[0],
            w_padded=record.w + 2 * record.padding[1],
        )


def ceil_div(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    return -(-np.asarray(a) // np.asarray(b))


def tile_candidates(size: int, unit: int = 1, limit: int = 12) -> np.ndarray:
    """Tile sizes for one dim: unit * 2**i below ``size``, and ``size`` rounded up to ``unit``."""
    full = int(ceil_div(size, unit)) * unit
    values = [unit << i for i in range(64) if (unit << i) < full][: limit - 1]
    return np.array(sorted({*values, full}), dtype=np.int64)


def input_footprint(gemm: Gemm, tm: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """Distinct input activations a (tm pixels x tr reduction terms) tile touches.

    Pixels are taken row-major in P x Q images; ``tr`` covers whole R*S windows of
    ceil(tr / (R*S)) channels. A 1x1 conv or a Linear touches tm * tr inputs; a 3x3 conv
    much fewer than im2col's tm * tr, because neighbouring windows overlap (the halo).
    """
    tm = np.asarray(tm, dtype=np.int64)
    tr = np.asarray(tr, dtype=np.int64)
    window = gemm.kernel_r * gemm.kernel_s
    if window == 1:
        return tm * tr
    channels = ceil_div(tr, window)
    pixels_per_image = gemm.p * gemm.q
    images = ceil_div(tm, pixels_per_image)
    in_image = np.minimum(tm, pixels_per_image)
    out_rows = ceil_div(in_image, gemm.q)
    in_rows = np.minimum((out_rows - 1) * gemm.stride + gemm.kernel_r, gemm.h_padded)
    in_cols = np.minimum(
        (np.minimum(in_image, gemm.q) - 1) * gemm.stride + gemm.kernel_s, gemm.w_padded
    )
    halo = images * channels * in_rows * in_cols
    return np.minimum(tm * tr, halo)


def tile_loads(
    order: tuple[str, str, str], trips: dict[str, np.ndarray], operand: str
) -> np.ndarray:
    """How many times an operand's tile is (re)loaded while walking ``trips`` in ``order``.

    The product of trip counts from the outermost loop down to the innermost loop that
    indexes the operand; the loops inside it reuse the resident tile.
    """
    dims = OPERAND_DIMS[operand]
    innermost = max(order.index(d) for d in dims)
    loads = np.ones_like(trips["m"])
    for dim in order[: innermost + 1]:
        loads = loads * trips[dim]
    return loads


def level_traffic(
    order: tuple[str, str, str],
    outer: tuple[np.ndarray, np.ndarray, np.ndarray],
    inner: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """Tile loads per operand for an inner tile walking an outer tile (elements: x footprint).

    Returns loads of input/weight tiles, output tile writes ("output") and partial-sum
    reads back ("output_reread" = writes minus the first visit of each output tile).
    """
    trips = {d: ceil_div(o, i) for d, o, i in zip(("m", "k", "r"), outer, inner, strict=True)}
    loads = {op: tile_loads(order, trips, op) for op in OPERAND_DIMS}
    loads["output_reread"] = loads["output"] - trips["m"] * trips["k"]
    return loads
