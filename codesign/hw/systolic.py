"""A rows x cols systolic array of scalar MACs with SCALE-Sim's stall-free timing.

Cycle and SRAM-access formulas follow SCALE-Sim (Samajdar et al., ISPASS 2020; v2/v3 source
``scalesim/compute/systolic_compute_{ws,os,is}.py``). With the layer as a GEMM (M = N*P*Q
pixels, K filters, R = C*R*S reduction terms), each dataflow maps two dims onto the array
(Sr along rows, Sc along columns) and streams the third (T) through it, in
ceil(Sr/rows) x ceil(Sc/cols) folds:

- WS: Sr = R, Sc = K, T = M; a fold fills weights (rows cycles), streams T inputs, drains:
  2*rows + cols + T - 2 cycles.
- OS: Sr = M, Sc = K, T = R; a fold streams T operand pairs, skew and drain:
  rows + cols + T - 2 cycles.
- IS: Sr = R, Sc = M, T = K; like WS with inputs pinned: 2*rows + cols + T - 2 cycles.

SRAM reads are operand-matrix elements requested per fold (SCALE-Sim counts the im2col
matrix, not distinct addresses). DRAM traffic: each operand once, except that the streamed
operand is re-fetched per fold of the pinned one when it outgrows half the buffer.
Memory stalls appear only when DRAM bandwidth is below demand (SCALE-Sim's stall-free mode
is infinite bandwidth).

Checked against SCALE-Sim v3.0.0 by ``scripts/validate_systolic.py`` (ResNet-20 and ResNet-18
layers, 16x16 and 32x32, WS/OS/IS): IFMAP and filter SRAM reads are identical, and our cycle
count is SCALE-Sim's "Total Cycles" + 1 on every layer, because SCALE-Sim reports the 0-based
index of the last cycle. OFMAP writes match on WS/IS; on OS SCALE-Sim also adds rows + cols
phantom writes per fold, which we do not count.
"""

from __future__ import annotations

import math

from codesign.errors import HardwareError
from codesign.hw.arch import ArchSpec
from codesign.hw.costing import Widths, mac_actions, make_cost, storage, traffic_details
from codesign.hw.dataflow import Gemm
from codesign.hw.energy import EnergyTable
from codesign.hw.records import LayerCost, LayerRecord


def systolic_folds(gemm: Gemm, rows: int, cols: int, dataflow: str) -> dict[str, int]:
    """SCALE-Sim's per-GEMM folds, cycles and SRAM element reads for one group."""
    m, k, r = gemm.m, gemm.k, gemm.r
    if dataflow == "ws":
        sr, sc, t, fill = r, k, m, 2 * rows + cols - 2
    elif dataflow == "os":
        sr, sc, t, fill = m, k, r, rows + cols - 2
    elif dataflow == "is":
        sr, sc, t, fill = r, m, k, 2 * rows + cols - 2
    else:
        raise ValueError(f"systolic arrays support ws, os, is; got {dataflow}")
    row_folds, col_folds = math.ceil(sr / rows), math.ceil(sc / cols)
    folds = row_folds * col_folds
    cycles = folds * (fill + t)
    if dataflow == "ws":
        ifmap, filt, ofmap = col_folds * m * r, r * k, row_folds * m * k
    elif dataflow == "os":
        ifmap, filt, ofmap = col_folds * m * r, row_folds * r * k, m * k
    else:
        ifmap, filt, ofmap = m * r, col_folds * r * k, row_folds * m * k
    return {
        "row_folds": row_folds,
        "col_folds": col_folds,
        "cycles": cycles,
        "ifmap_reads": ifmap,
        "filter_reads": filt,
        "ofmap_writes": ofmap,
    }


def simulate_systolic(record: LayerRecord, arch: ArchSpec, table: EnergyTable) -> LayerCost:
    """One layer on a systolic array (``arch.kind == "systolic"``)."""
    compute, memory = arch.compute, arch.memory
    rows, cols, dataflow = compute.rows, compute.cols, compute.dataflow
    if dataflow not in ("ws", "os", "is"):
        raise HardwareError(
            f"{arch.name}: a systolic array runs ws, os or is; {dataflow} needs kind = 'dense'"
        )
    gemm = Gemm.of(record)
    widths = Widths.of(record, compute.accumulator_bits)
    folds = systolic_folds(gemm, rows, cols, dataflow)
    g = gemm.groups
    compute_cycles = g * folds["cycles"]

    # Distinct data, for DRAM: inputs (unpadded), weights, outputs.
    input_bits = record.n * record.c * record.groups * record.h * record.w * widths.input_bits
    weight_bits = record.weight_count * widths.weight_bits
    output_bits = record.n * record.k * record.p * record.q * widths.output_bits
    # SCALE-Sim splits the buffer into ifmap / filter / ofmap SRAMs; the streamed operand
    # is re-read from DRAM once per fold of the pinned one only when it outgrows its half.
    half = 8 * memory.gbuf_bytes / 2
    refetch_input = refetch_weight = 1
    if dataflow == "ws" and input_bits > half:
        refetch_input = folds["col_folds"]
    elif dataflow == "os" and weight_bits > half:
        refetch_weight = folds["row_folds"]
    elif dataflow == "is" and weight_bits > half:
        refetch_weight = folds["col_folds"]
    # Partial sums of WS/IS row folds are written back and re-read by the next fold.
    psum_rereads = g * (folds["ofmap_writes"] - gemm.m * gemm.k)
    sram = memory.gbuf_bytes
    actions = [
        *mac_actions(record, widths, compute.zero_gating),
        # every MAC reads its two operand registers and updates its accumulator register
        storage("rf", "reg", "read", record.dense_macs * (widths.weight_bits + widths.input_bits)),
        storage("rf", "reg", "write", record.dense_macs * widths.accumulator_bits),
        storage("gbuf", "sram", "read", g * folds["ifmap_reads"] * widths.input_bits, sram),
        storage("gbuf", "sram", "read", g * folds["filter_reads"] * widths.weight_bits, sram),
        storage("gbuf", "sram", "read", psum_rereads * widths.accumulator_bits, sram),
        storage("gbuf", "sram", "write", g * folds["ofmap_writes"] * widths.accumulator_bits, sram),
        storage(
            "gbuf", "sram", "write", input_bits * refetch_input + weight_bits * refetch_weight, sram
        ),
        storage("dram", "dram", "read", input_bits * refetch_input + weight_bits * refetch_weight),
        storage("dram", "dram", "write", output_bits),
    ]
    dram_bits = input_bits * refetch_input + weight_bits * refetch_weight + output_bits
    details = {
        "dataflow": dataflow,
        "row_folds": folds["row_folds"],
        "col_folds": folds["col_folds"],
        "sram_ifmap_reads": g * folds["ifmap_reads"],
        "sram_filter_reads": g * folds["filter_reads"],
        "sram_ofmap_writes": g * folds["ofmap_writes"],
        **traffic_details(actions),
    }
    return make_cost(
        record,
        f"systolic-{rows}x{cols}-{dataflow}",
        table,
        compute_cycles,
        dram_bits / memory.dram_bits_per_cycle,
        rows * cols,
        actions,
        details,
    )
