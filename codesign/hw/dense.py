"""A dense PE array with a mapping (tiling) search: scalar, vector, matrix-vector or
matrix-matrix MAC units; WS / OS / IS / OS-LWS / WS-LOS dataflows; RF -> PE storage ->
global buffer -> DRAM.

Mapping: the PE array splits the GEMM's M and K dims spatially (pm x pk = PEs); each PE holds
a tile (m1, k1, r1) in its scratchpad (its register file when the arch has none) and feeds
its MAC unit unit-tile by unit-tile in the dataflow's inner loop order; the global buffer
holds a tile (m2, k2, r2) walked in the outer order; DRAM holds the layer. The search is in
two stages, each vectorised with numpy over every candidate: (1) PE split and PE tile, by the
energy (or EDP) of PE-storage and buffer traffic, keeping the best few; (2) buffer tile for
each of those, by total energy (or EDP). Tiles must fit their level (no double buffering).
Results are cached per (layer shape, widths, arch, energy table).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from codesign.errors import HardwareError
from codesign.hw.arch import ArchSpec
from codesign.hw.costing import Widths, mac_actions, make_cost, storage, traffic_details
from codesign.hw.dataflow import (
    DATAFLOW_ORDERS,
    ORDERS,
    Gemm,
    ceil_div,
    input_footprint,
    level_traffic,
    tile_candidates,
)
from codesign.hw.energy import EnergyTable
from codesign.hw.records import LayerCost, LayerRecord

STAGE1_KEEP = 16  # PE-level candidates carried into the buffer-tile search


def _divisor_pairs(count: int) -> list[tuple[int, int]]:
    return [(d, count // d) for d in range(1, count + 1) if count % d == 0]


def _objective(energy: np.ndarray, cycles: np.ndarray, objective: str) -> np.ndarray:
    return energy * cycles if objective == "edp" else energy + 1e-9 * cycles  # cycles break ties


@functools.lru_cache(maxsize=4096)
def best_mapping(
    gemm: Gemm, arch: ArchSpec, widths: Widths, table: EnergyTable
) -> dict[str, float]:
    """The cheapest legal mapping of one group's GEMM, with its element counts per level."""
    compute, memory = arch.compute, arch.memory
    um, uk, ur = compute.unit_shape
    outer, inner = (ORDERS[o] for o in DATAFLOW_ORDERS[compute.dataflow])
    ib, wb, acc = widths.input_bits, widths.weight_bits, widths.accumulator_bits
    pe_bytes = memory.spad_bytes or memory.rf_bytes
    e_pe = table.sram_pj_per_bit(pe_bytes) if memory.spad_bytes else table.register_pj_per_bit()
    e_gbuf = table.sram_pj_per_bit(memory.gbuf_bytes)
    e_dram = table.dram_pj_per_bit()
    M, K, R = gemm.m, gemm.k, gemm.r

    # ---- stage 1: PE split x PE tile ------------------------------------------------------------
    columns: list[list[np.ndarray]] = [[], [], [], [], []]
    for pm, pk in _divisor_pairs(compute.pes):
        grid = np.meshgrid(
            tile_candidates(math.ceil(M / pm), um),
            tile_candidates(math.ceil(K / pk), uk),
            tile_candidates(R, ur),
            indexing="ij",
        )
        size = grid[0].size
        for column, values in zip(
            columns, (np.full(size, pm), np.full(size, pk), *grid), strict=True
        ):
            column.append(np.ravel(values))
    pm, pk, m1, k1, r1 = (np.concatenate(c).astype(np.int64) for c in columns)
    pe_bits = input_footprint(gemm, m1, r1) * ib + k1 * r1 * wb + m1 * k1 * acc
    fits = pe_bits <= 8 * pe_bytes
    if not fits.any():
        raise HardwareError(
            f"{arch.name}: PE storage of {pe_bytes} bytes cannot hold even one MAC-unit tile "
            f"({int(pe_bits.min()) // 8} bytes needed): enlarge memory.spad_bytes/rf_bytes"
        )
    pm, pk, m1, k1, r1 = (a[fits] for a in (pm, pk, m1, k1, r1))
    am, ak = pm * m1, pk * k1  # the array tile: what one step of all PEs covers
    array_steps = ceil_div(M, am) * ceil_div(K, ak) * ceil_div(R, r1)
    compute_cycles = array_steps * ceil_div(m1, um) * ceil_div(k1, uk) * ceil_div(r1, ur)
    pe_tiles = ceil_div(M, m1) * ceil_div(K, k1) * ceil_div(R, r1)
    # PE storage -> MAC unit, in the inner order (unit tiles are im2col elements)
    unit = level_traffic(inner, (m1, k1, r1), (um, uk, ur))
    pe_reads = pe_tiles * (unit["input"] * um * ur * ib + unit["weight"] * uk * ur * wb)
    pe_reads = pe_reads + pe_tiles * unit["output_reread"] * um * uk * acc
    pe_writes = pe_tiles * unit["output"] * um * uk * acc

    def array_level(
        parent: tuple, tiles_of_parent, pm_, pk_, m1_, k1_, r1_
    ) -> dict[str, np.ndarray]:
        """Global buffer <-> PE array traffic (bits) for array tiles walking ``parent`` tiles."""
        am_, ak_ = pm_ * m1_, pk_ * k1_
        t = level_traffic(outer, parent, (am_, ak_, r1_))
        pes_ = pm_ * pk_
        return {
            # one buffer read is multicast to every PE that needs the same data
            "gbuf_read": tiles_of_parent
            * (
                t["input"] * input_footprint(gemm, am_, r1_) * ib
                + t["weight"] * ak_ * r1_ * wb
                + t["output_reread"] * am_ * ak_ * acc
            ),
            "gbuf_write": tiles_of_parent * t["output"] * am_ * ak_ * acc,
            "pe_fill": tiles_of_parent
            * pes_
            * (
                t["input"] * input_footprint(gemm, m1_, r1_) * ib
                + t["weight"] * k1_ * r1_ * wb
                + t["output_reread"] * m1_ * k1_ * acc
            ),
            "pe_drain": tiles_of_parent * pes_ * t["output"] * m1_ * k1_ * acc,
        }

    whole = (np.int64(M), np.int64(K), np.int64(R))
    arr = array_level(whole, np.int64(1), pm, pk, m1, k1, r1)
    e1 = (pe_reads + pe_writes + arr["pe_fill"] + arr["pe_drain"]) * e_pe
    e1 = e1 + (arr["gbuf_read"] + arr["gbuf_write"]) * e_gbuf
    c1 = np.maximum(
        compute_cycles, (arr["gbuf_read"] + arr["gbuf_write"]) / memory.gbuf_bits_per_cycle
    )
    keep = np.argsort(_objective(e1, c1, arch.objective), kind="stable")[:STAGE1_KEEP]

    # ---- stage 2: global-buffer tile for the kept PE mappings -----------------------------------
    best: dict[str, float] | None = None
    best_score = np.inf
    for i in keep:
        a_m, a_k, a_r = int(am[i]), int(ak[i]), int(r1[i])
        grid = np.meshgrid(
            tile_candidates(math.ceil(M / a_m)) * a_m,
            tile_candidates(math.ceil(K / a_k)) * a_k,
            tile_candidates(math.ceil(R / a_r)) * a_r,
            indexing="ij",
        )
        m2, k2, r2 = (np.ravel(g) for g in grid)
        in_fp2 = input_footprint(gemm, m2, r2)
        gbuf_fits = in_fp2 * ib + k2 * r2 * wb + m2 * k2 * acc <= 8 * memory.gbuf_bytes
        if not gbuf_fits.any():
            continue
        m2, k2, r2, in_fp2 = m2[gbuf_fits], k2[gbuf_fits], r2[gbuf_fits], in_fp2[gbuf_fits]
        d = level_traffic(outer, whole, (m2, k2, r2))
        spill = d["output_reread"] * m2 * k2 * acc  # partial sums written out and read back
        dram_read = d["input"] * in_fp2 * ib + d["weight"] * k2 * r2 * wb + spill
        dram_write = M * K * widths.output_bits + spill
        gbuf_tiles = ceil_div(M, m2) * ceil_div(K, k2) * ceil_div(R, r2)
        arr = array_level((m2, k2, r2), gbuf_tiles, pm[i], pk[i], m1[i], k1[i], r1[i])
        pe_bits_moved = pe_reads[i] + pe_writes[i] + arr["pe_fill"] + arr["pe_drain"]
        gbuf_bits = arr["gbuf_read"] + arr["gbuf_write"] + dram_read  # DRAM reads fill the buffer
        energy = pe_bits_moved * e_pe + gbuf_bits * e_gbuf + (dram_read + dram_write) * e_dram
        memory_cycles = np.maximum(
            (dram_read + dram_write) / memory.dram_bits_per_cycle,
            np.maximum(
                gbuf_bits / memory.gbuf_bits_per_cycle, pe_bits_moved / memory.spad_bits_per_cycle
            ),
        )
        cycles = np.maximum(compute_cycles[i], memory_cycles)
        score = _objective(energy, cycles, arch.objective)
        j = int(np.argmin(score))
        if score[j] < best_score:
            best_score = float(score[j])
            best = {
                "pes_m": int(pm[i]), "pes_k": int(pk[i]),
                "pe_tile_m": int(m1[i]), "pe_tile_k": int(k1[i]), "pe_tile_r": int(r1[i]),
                "gbuf_tile_m": int(m2[j]), "gbuf_tile_k": int(k2[j]), "gbuf_tile_r": int(r2[j]),
                "compute_cycles": float(compute_cycles[i]),
                "memory_cycles": float(memory_cycles[j]),
                "pe_read_bits": float(pe_reads[i] + arr["pe_drain"][j]),
                "pe_write_bits": float(pe_writes[i] + arr["pe_fill"][j]),
                "gbuf_read_bits": float(arr["gbuf_read"][j]),
                "gbuf_write_bits": float(arr["gbuf_write"][j] + dram_read[j]),
                "dram_read_bits": float(dram_read[j]),
                "dram_write_bits": float(dram_write[j]),
            }  # fmt: skip
    if best is None:
        raise HardwareError(
            f"{arch.name}: no tiling of a {M}x{K}x{R} GEMM fits a {memory.gbuf_bytes}-byte "
            "global buffer: enlarge memory.gbuf_bytes"
        )
    return best


def simulate_dense(record: LayerRecord, arch: ArchSpec, table: EnergyTable) -> LayerCost:
    """One layer on a dense PE array (``arch.kind == "dense"``) under its best mapping."""
    gemm = Gemm.of(record)
    widths = Widths.of(record, arch.compute.accumulator_bits)
    mapping = best_mapping(gemm, arch, widths, table)
    g = gemm.groups
    memory = arch.memory
    pe_component, pe_kind = ("spad", "sram") if memory.spad_bytes else ("rf", "reg")
    actions = [
        *mac_actions(record, widths, arch.compute.zero_gating),
        storage(pe_component, pe_kind, "read", g * mapping["pe_read_bits"], memory.spad_bytes),
        storage(pe_component, pe_kind, "write", g * mapping["pe_write_bits"], memory.spad_bytes),
        storage("gbuf", "sram", "read", g * mapping["gbuf_read_bits"], memory.gbuf_bytes),
        storage("gbuf", "sram", "write", g * mapping["gbuf_write_bits"], memory.gbuf_bytes),
        storage("dram", "dram", "read", g * mapping["dram_read_bits"]),
        storage("dram", "dram", "write", g * mapping["dram_write_bits"]),
    ]
    unit_m, unit_k, unit_r = arch.compute.unit_shape
    peak = arch.compute.pes * unit_m * unit_k * unit_r
    details = {"dataflow": arch.compute.dataflow, **mapping, **traffic_details(actions)}
    return make_cost(
        record,
        f"dense-{arch.compute.unit}-{arch.compute.dataflow}",
        table,
        g * mapping["compute_cycles"],
        g * mapping["memory_cycles"],
        peak,
        actions,
        details,
    )
