"""SCNN's PT-IS-CP-sparse datapath and its dense baselines DCNN / DCNN-opt.

After Parashar et al., "SCNN: an accelerator for compressed-sparse convolutional neural
networks", ISCA 2017. The input of every layer is cut into planar tiles, one per PE of a
``pe_rows`` x ``pe_cols`` grid (PT); each PE keeps its tile's compressed nonzero activations
stationary (IS) and, for one group of ``kc`` output channels at a time, streams the group's
compressed nonzero weights of every input channel past them: an F x I multiplier array forms
the Cartesian product (CP) of F nonzero weights and I nonzero activations per cycle and
scatters the products through a crossbar into ``accumulator_banks`` banks.

Timing, vectorised over images x output-channel groups x PEs with the measured per-tile,
per-channel nonzero counts of the ``LayerRecord``:
- a PE spends ceil(a / I) * ceil(w / F) cycles on input channel c, with a its tile's nonzero
  activations of c and w the group's nonzero weights of c (the ceilings are the multiplier
  array's fragmentation);
- all PEs wait at a barrier at the end of every output-channel group (they share the weight
  broadcast), so a group costs the slowest PE's time: load imbalance from the real tiles;
- bank conflicts: F*I products per cycle land on random banks; a bank takes one per cycle,
  so a cycle stretches to the most-loaded bank, softened by the crossbar's queues: we charge
  the expected excess over one write, E[max load] - 1, divided by ``xbar_queue_depth`` (not
  given by the paper: calibrated, see ScnnSpec);
- halo: partial sums that fall outside a PE's tile are sent to its neighbours after each
  group (accumulator reads + writes, and cycles at one value per bank per cycle).
Strided layers: activations and weights are grouped by stride phase so that only pairs whose
product lands on an output position are multiplied (we assume nonzeros split evenly over
phases; without this a stride-s layer would waste (s*s - 1) of every s*s products).

DCNN: the same 64 PEs of 16 multipliers computing dense dot products over the same tiles;
DCNN-opt adds zero-gating of the multipliers and compressed DRAM traffic (paper, Table 4).
Storage is zero-run encoded: every nonzero carries a ``zero_run_bits`` index (runs longer than
the index can count would add padding entries; we do not model those).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from codesign.errors import HardwareError
from codesign.hw.arch import ArchSpec, ScnnSpec
from codesign.hw.costing import Widths, make_cost, storage, traffic_details
from codesign.hw.energy import EnergyTable
from codesign.hw.nonzeros import EXACT_FP32, exact_fp32_matmul
from codesign.hw.records import Action, LayerCost, LayerRecord


@functools.lru_cache(maxsize=64)
def expected_max_bank_load(products: int, banks: int) -> float:
    """E[max over banks of products landing in it] for ``products`` uniform over ``banks``.

    Exact, by the distribution of the maximum: P(max <= t) = t-capped occupancy count, computed
    with a DP over banks (products and banks are small: 16 and 32 in the paper).
    """
    if products <= 0:
        return 0.0
    expected = 0.0
    for t in range(products):  # E[max] = sum_t P(max > t)
        # ways[j] = number of ways to put j labelled products in the banks so far, each <= t
        ways = np.zeros(products + 1)
        ways[0] = 1.0
        fact = np.array([math.factorial(i) for i in range(products + 1)], dtype=float)
        for _ in range(banks):
            new = np.zeros_like(ways)
            for load in range(min(t, products) + 1):
                new[load:] += ways[: products + 1 - load] / fact[load]
            ways = new
        p_le = ways[products] * fact[products] / float(banks) ** products
        expected += 1.0 - p_le
    return expected


def _grouped_counts(record: LayerRecord, spec: ScnnSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-tile activations [N, G, Cg, used_rows, used_cols] (a view of the record's integers)
    and per-(output group, c) weights [G, KG, Cg] int64.

    Tiles of ceil(H / rows) pixels leave the grid's last rows (columns) empty on inputs
    smaller than the grid allows: those hold no activation in any image and are left out.
    """
    g, cg = record.groups, record.c
    tiles = record.input_nonzeros_per_tile
    n, _c, rows, cols = tiles.shape
    used_rows = math.ceil(record.h / math.ceil(record.h / rows))
    used_cols = math.ceil(record.w / math.ceil(record.w / cols))
    acts = tiles.reshape(n, g, cg, rows, cols)[..., :used_rows, :used_cols]
    kg = record.k // g
    tile_out = math.ceil(record.p / spec.pe_rows) * math.ceil(record.q / spec.pe_cols)
    halo_tile = (math.ceil(record.p / spec.pe_rows) + record.r - 1) * (
        math.ceil(record.q / spec.pe_cols) + record.s - 1
    )
    # Output channels per group: the paper's kc, capped by what the accumulators hold.
    fits = max(1, (spec.accumulator_bytes * 8) // (32 * max(halo_tile, tile_out)))
    kc = max(1, min(spec.kc, kg, fits))
    groups = math.ceil(kg / kc)
    weights = np.zeros((g, groups * kc, cg), dtype=np.int64)
    weights[:, :kg] = np.asarray(record.weight_nonzeros_per_kc, dtype=np.int64).reshape(g, kg, cg)
    return acts, weights.reshape(g, groups, kc, cg).sum(axis=2), kc


# Below EXACT_FP32 (fp32) and EXACT_FP64 every partial sum of a product of non-negative integer
# matrices is an exactly representable integer: BLAS is exact in any summation order.
EXACT_FP64 = 2**53
MATMUL_CHUNK_ELEMENTS = 1 << 22  # operand/result entries per matmul (bounds the memory)


def pe_work(
    acts: np.ndarray, weights: np.ndarray, act_lanes: int, weight_lanes: int
) -> dict[str, int]:
    """Exact integer totals of SCNN's Cartesian-product work (see the module docstring).

    ``acts`` [N, G, Cg, *tiles]: nonzero activations per image, group, input channel and PE
    tile (any tile layout: the tiles are flattened; a strided view is fine);
    ``weights`` [G, KG, Cg]: nonzero weights per output-channel group and input channel;
    a PE multiplies ceil(a / act_lanes) activation vectors by ceil(w / weight_lanes) weight
    vectors. Returns ``barrier`` (sum over images and output-channel groups of the slowest
    PE's vector products), ``busy`` (vector products over all PEs), ``products`` (sum of
    a * w), ``vector_weights`` (sum of ceil(a / act_lanes) * w) and ``activations`` (sum of a).

    The per-PE sums over input channels are one batched matmul per chunk of images (bounded
    memory however many were captured), in fp32 when no entry or partial sum can reach 2**24
    and in fp64 below 2**53: integers there are exact in any summation order, and so is
    ceil(a / lanes) computed as a float division (a is far below the bound).
    """
    n, g, cg = acts.shape[:3]
    t = math.prod(acts.shape[3:])
    kg = weights.shape[1]
    weight_vectors = -(-weights.astype(np.int64) // weight_lanes)  # [G, KG, Cg]
    largest_act = int(acts.max(initial=0))
    bound = cg * -(-largest_act // act_lanes) * int(weight_vectors.max(initial=0))
    if max(bound, largest_act) < EXACT_FP32 and exact_fp32_matmul():
        dtype = np.float32
    elif max(bound, largest_act) < EXACT_FP64:
        dtype = np.float64
    else:
        raise HardwareError(
            f"SCNN tile counts too large for exact arithmetic ({largest_act} nonzeros in a "
            "tile): capture with a finer tile grid"
        )
    rhs = torch.from_numpy(weight_vectors.astype(dtype)).transpose(1, 2)  # [G, Cg, KG] view
    chunk = max(1, MATMUL_CHUNK_ELEMENTS // (g * t * max(cg, kg)))
    per_channel_acts = torch.zeros(g, cg, dtype=torch.float64)
    per_channel_vectors = torch.zeros(g, cg, dtype=torch.float64)
    barrier = 0.0
    for start in range(0, n, chunk):
        part = acts[start : start + chunk]
        images = part.shape[0]
        # one contiguous copy [n', G, Cg, T] in the matmul's dtype
        vectors = torch.from_numpy(part.astype(dtype).reshape(images, g, cg, t))
        # sums over images are exact in fp32 below 2**24, then over tiles in fp64
        over_images = torch.float32 if images * largest_act < EXACT_FP32 else torch.float64
        per_channel_acts += vectors.sum(0, dtype=over_images).sum(-1, dtype=torch.float64)
        vectors.div_(act_lanes).ceil_()  # activation vectors per PE
        per_channel_vectors += vectors.sum(0, dtype=over_images).sum(-1, dtype=torch.float64)
        # cycles[n'G, t, k] = sum over c: the activations enter transposed (a view), the
        # weights broadcast over images (copied only for grouped layers)
        lhs = vectors.view(images * g, cg, t).transpose(1, 2)
        cycles = torch.bmm(lhs, rhs.expand(images, g, cg, kg).reshape(images * g, cg, kg))
        barrier += float(cycles.amax(1).sum(dtype=torch.float64))
    acts_per_channel = per_channel_acts.numpy().astype(np.int64)  # [G, Cg]
    vectors_per_channel = per_channel_vectors.numpy().astype(np.int64)
    weights_per_channel = weights.sum(axis=1, dtype=np.int64)  # [G, Cg]
    return {
        "barrier": int(barrier),
        "busy": int((vectors_per_channel * weight_vectors.sum(axis=1)).sum()),
        "products": int((acts_per_channel * weights_per_channel).sum()),
        "vector_weights": int((vectors_per_channel * weights_per_channel).sum()),
        "activations": int(acts_per_channel.sum()),
    }


def _dram_and_buffers(
    record: LayerRecord, widths: Widths, spec: ScnnSpec, compressed: bool
) -> tuple[list[Action], float]:
    """DRAM traffic (each tensor once) and the buffer writes that receive it."""
    run = spec.zero_run_bits
    out_count = record.n * record.k * record.p * record.q
    # Output density is not measured for this layer; ReLU networks keep roughly the input's.
    out_nonzeros = out_count * record.act_density
    if compressed:
        weight_bits = record.weight_nonzeros * (widths.weight_bits + run)
        input_bits = record.input_nonzeros * (widths.input_bits + run)
        output_bits = out_nonzeros * (widths.output_bits + run)
    else:
        weight_bits = record.weight_count * widths.weight_bits
        input_bits = record.input_count * widths.input_bits
        output_bits = out_count * widths.output_bits
    actions = [
        storage("dram", "dram", "read", weight_bits + input_bits),
        storage("dram", "dram", "write", output_bits),
        storage("iaram", "sram", "write", input_bits, spec.iaram_bytes),
        storage("oaram", "sram", "write", output_bits, spec.oaram_bytes),
        storage("weight_fifo", "sram", "write", weight_bits, spec.weight_fifo_bytes),
    ]
    return actions, weight_bits + input_bits + output_bits


def simulate_scnn(record: LayerRecord, arch: ArchSpec, table: EnergyTable) -> LayerCost:
    """One layer on SCNN (``arch.kind == "scnn"``)."""
    spec = arch.scnn
    widths = Widths.of(record, arch.compute.accumulator_bits)
    acts, weights, kc = _grouped_counts(record, spec)
    f, i = spec.mult_f, spec.mult_i
    # Strided layers: activations and weights are split by stride phase, and only matching
    # phases multiply (an even split is assumed; the record has no per-phase counts).
    phases = record.stride[0] * record.stride[1]
    # cycles of every PE on every (image, output group) are the sum over input channels and
    # phases of ceil(a / I) * ceil(w / F); the barrier per output-channel group keeps the
    # slowest PE's
    work = pe_work(acts, weights, i * phases, f * phases)
    array_cycles = float(phases * work["barrier"])
    busy_cycles = float(phases * work["busy"])
    products = float(work["products"]) / phases
    pes = spec.pe_rows * spec.pe_cols

    excess = expected_max_bank_load(f * i, spec.accumulator_banks) - 1.0
    conflict = max(0.0, excess) / spec.xbar_queue_depth
    n_groups = acts.shape[0] * weights.shape[0] * weights.shape[1]
    tile_h, tile_w = math.ceil(record.p / spec.pe_rows), math.ceil(record.q / spec.pe_cols)
    halo_per_pe = kc * ((tile_h + record.r - 1) * (tile_w + record.s - 1) - tile_h * tile_w)
    halo_cycles = n_groups * math.ceil(halo_per_pe / spec.accumulator_banks)
    compute_cycles = array_cycles * (1.0 + conflict) + halo_cycles

    run = spec.zero_run_bits
    bank_bytes = max(1, spec.accumulator_bytes // spec.accumulator_banks)  # one bank per access
    halo_values = n_groups * pes * halo_per_pe
    actions = [
        Action("mac", "mult", products, widths.weight_bits, widths.input_bits, widths.is_float),
        Action("mac", "add", products, widths.accumulator_bits, 0, widths.is_float),
        # activations: each nonzero read once per output-channel group (stationary in the PE)
        storage("iaram", "sram", "read", float(work["activations"]) * weights.shape[1] * (widths.input_bits + run), spec.iaram_bytes),
        # weights: every PE reads each weight vector once per activation vector it meets
        storage("weight_fifo", "sram", "read", float(work["vector_weights"]) * (widths.weight_bits + run), spec.weight_fifo_bytes),
        # scatter: read-modify-write of an accumulator entry per product
        storage("accumulators", "sram", "read", products * widths.accumulator_bits, bank_bytes),
        storage("accumulators", "sram", "write", products * widths.accumulator_bits, bank_bytes),
        storage("halo", "sram", "read", halo_values * widths.accumulator_bits, bank_bytes),
        storage("halo", "sram", "write", halo_values * widths.accumulator_bits, bank_bytes),
    ]  # fmt: skip
    dram, dram_bits = _dram_and_buffers(record, widths, spec, compressed=True)
    actions += dram
    details = {
        "kc": kc,
        "products": products,
        "multiplier_utilization": products / (pes * f * i * max(array_cycles, 1.0)),
        "load_balance": busy_cycles / (pes * max(array_cycles, 1.0)),
        "bank_conflict_factor": conflict,
        "halo_cycles": halo_cycles,
        **traffic_details(actions),
    }
    return make_cost(
        record, "scnn", table, compute_cycles, dram_bits / arch.memory.dram_bits_per_cycle,
        pes * f * i, actions, details,
    )  # fmt: skip


def simulate_dcnn(record: LayerRecord, arch: ArchSpec, table: EnergyTable) -> LayerCost:
    """One layer on DCNN / DCNN-opt (``arch.kind == "dcnn"``): dense dot products per PE tile.

    Every PE computes kc x (tile outputs) dot products of length C*R*S on F*I multipliers;
    the largest tile sets the time. DCNN-opt (``scnn.zero_gating`` and ``compressed_dram``)
    gates multipliers on zero operands and moves compressed data to and from DRAM.
    """
    spec = arch.scnn
    widths = Widths.of(record, arch.compute.accumulator_bits)
    pes, lanes = spec.pe_rows * spec.pe_cols, spec.mult_f * spec.mult_i
    tile_out = math.ceil(record.p / spec.pe_rows) * math.ceil(record.q / spec.pe_cols)
    # outputs of one image are spread over the PEs' tiles; a linear layer's single pixel
    # occupies one PE, as in SCNN's planar tiling
    per_pe_macs = record.k * record.c * record.r * record.s * tile_out
    compute_cycles = record.n * math.ceil(per_pe_macs / lanes)
    macs_gated = record.effectual_macs if spec.zero_gating else record.dense_macs
    k_groups = math.ceil(record.k / max(1, min(spec.kc, record.k)))
    bank_bytes = max(1, spec.accumulator_bytes // spec.accumulator_banks)
    actions = [
        Action("mac", "mult", macs_gated, widths.weight_bits, widths.input_bits, widths.is_float),
        Action("mac", "add", macs_gated, widths.accumulator_bits, 0, widths.is_float),
        # each input read once per output-channel group; weights once per tile pass (dot
        # products over F lanes reuse an activation across I outputs and a weight across F)
        storage("iaram", "sram", "read", record.input_count * k_groups * widths.input_bits, spec.iaram_bytes),
        storage("weight_fifo", "sram", "read", record.dense_macs / spec.mult_i * widths.weight_bits, spec.weight_fifo_bytes),
        storage("accumulators", "sram", "read", record.dense_macs / spec.mult_f * widths.accumulator_bits, bank_bytes),
        storage("accumulators", "sram", "write", record.dense_macs / spec.mult_f * widths.accumulator_bits, bank_bytes),
    ]  # fmt: skip
    dram, dram_bits = _dram_and_buffers(record, widths, spec, compressed=spec.compressed_dram)
    actions += dram
    name = "dcnn-opt" if spec.zero_gating or spec.compressed_dram else "dcnn"
    return make_cost(
        record, name, table, compute_cycles, dram_bits / arch.memory.dram_bits_per_cycle,
        pes * lanes, actions, {"tile_outputs": tile_out, **traffic_details(actions)},
    )  # fmt: skip
