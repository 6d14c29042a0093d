"""A matrix-matrix (tensor core) unit, dense or with 2:4 structured sparsity.

The layer as a GEMM (M = N*P*Q pixels, K filters, R = C*R*S reduction terms) is cut into
m x n output tiles; ``cores`` tensor cores take tiles in turn, and each MMA step consumes k
reduction terms of one tile per cycle. With ``sparse_2of4`` (NVIDIA A100 whitepaper, 2020;
Mishra et al., arXiv 2104.08378) a layer whose weights keep <= 2 of every 4 consecutive input
channels stores only the kept half plus a 2-bit index per kept weight, and each step covers
2k reduction terms: math throughput doubles. Layers that are not 2:4 compliant run at the
dense rate, as the hardware cannot skip their zeros.

Operands are staged in a shared buffer (``memory.gbuf_bytes``): each MMA step reads an m x k
(sparse: m x 2k, the index picks the 2 of 4) input tile and a k x n weight tile; accumulators
live in registers. DRAM moves each tensor once (weights compressed on the sparse core).
"""

from __future__ import annotations

import math

from codesign.hw.arch import ArchSpec
from codesign.hw.costing import Widths, make_cost, storage, traffic_details
from codesign.hw.dataflow import Gemm
from codesign.hw.energy import EnergyTable
from codesign.hw.records import Action, LayerCost, LayerRecord


def tensor_core_steps(gemm: Gemm, m: int, n: int, k: int, cores: int, sparse: bool) -> int:
    """Cycles of one group's GEMM: output tiles spread over cores, ceil(R / k) steps each."""
    output_tiles = math.ceil(gemm.m / m) * math.ceil(gemm.k / n)
    steps_per_tile = math.ceil(gemm.r / (2 * k if sparse else k))
    return math.ceil(output_tiles / cores) * steps_per_tile


def simulate_tensor_core(record: LayerRecord, arch: ArchSpec, table: EnergyTable) -> LayerCost:
    """One layer on a (sparse) tensor core (``arch.kind == "tensor_core"``)."""
    tc = arch.tensor_core
    gemm = Gemm.of(record)
    widths = Widths.of(record, arch.compute.accumulator_bits)
    sparse = tc.sparse_2of4 and record.nm_compliant
    steps = gemm.groups * tensor_core_steps(gemm, tc.m, tc.n, tc.k, tc.cores, sparse)
    reduction_per_step = 2 * tc.k if sparse else tc.k
    # steps summed over cores: every core's operand reads
    core_steps = (
        gemm.groups
        * math.ceil(gemm.m / tc.m)
        * math.ceil(gemm.k / tc.n)
        * math.ceil(gemm.r / reduction_per_step)
    )
    macs = record.dense_macs / 2 if sparse else record.dense_macs
    kept_weights = record.weight_count / 2 if sparse else record.weight_count
    metadata_bits = kept_weights * tc.metadata_bits if sparse else 0.0
    weight_store_bits = kept_weights * widths.weight_bits + metadata_bits
    input_bits = record.input_count * widths.input_bits
    output_bits = record.n * record.k * record.p * record.q * widths.output_bits
    buffer = arch.memory.gbuf_bytes
    step_weight_bits = tc.k * tc.n * (widths.weight_bits + (tc.metadata_bits if sparse else 0))
    actions = [
        Action("mac", "mult", macs, widths.weight_bits, widths.input_bits, widths.is_float),
        Action("mac", "add", macs, widths.accumulator_bits, 0, widths.is_float),
        storage("buffer", "sram", "read", core_steps * tc.m * reduction_per_step * widths.input_bits, buffer),
        storage("buffer", "sram", "read", core_steps * step_weight_bits, buffer),
        storage("buffer", "sram", "write", input_bits + weight_store_bits, buffer),
        storage("rf", "reg", "read", core_steps * tc.m * tc.n * widths.accumulator_bits),
        storage("rf", "reg", "write", core_steps * tc.m * tc.n * widths.accumulator_bits),
        storage("dram", "dram", "read", input_bits + weight_store_bits),
        storage("dram", "dram", "write", output_bits),
    ]  # fmt: skip
    dram_bits = input_bits + weight_store_bits + output_bits
    details = {
        "sparse_2of4_active": sparse,
        "metadata_bits": metadata_bits,
        **traffic_details(actions),
    }
    return make_cost(
        record,
        "sparse-tc-2of4" if tc.sparse_2of4 else "tc",
        table,
        steps,
        dram_bits / arch.memory.dram_bits_per_cycle,
        tc.cores * tc.m * tc.n * tc.k,
        actions,
        details,
    )
