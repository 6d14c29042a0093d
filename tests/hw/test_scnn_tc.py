from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from codesign.errors import HardwareError
from codesign.hw import scnn
from codesign.hw.arch import ArchSpec, ScnnSpec, TensorCoreSpec
from codesign.hw.capture import capture
from codesign.hw.energy import horowitz45
from codesign.hw.nonzeros import exact_fp32_matmul
from codesign.hw.scnn import expected_max_bank_load, pe_work, simulate_dcnn, simulate_scnn
from codesign.hw.sparse_tc import simulate_tensor_core

SPEC = ScnnSpec(pe_rows=2, pe_cols=2, kc=2, accumulator_bytes=1 << 20)


def tiny_layer(act_keep: float, weight_keep: float, seed: int = 0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_((torch.rand_like(conv.weight) < weight_keep).float())
    x = torch.randn(2, 3, 6, 6) * (torch.rand(2, 3, 6, 6) < act_keep)
    record = capture(conv, lambda m: m(x), tile_grid=(2, 2))[0]
    return record, x, conv.weight.detach()


def test_scnn_products_and_cycles_match_a_brute_force_loop():
    record, x, w = tiny_layer(0.5, 0.6)
    arch = ArchSpec(name="scnn", kind="scnn", scnn=SPEC)
    cost = simulate_scnn(record, arch, horowitz45())
    # Brute force: every PE multiplies every nonzero activation of its 3x3 tile by every
    # nonzero weight of the same input channel (the Cartesian product), per output group.
    products = 0
    cycles = 0
    for n in range(2):
        for k0 in range(0, 4, 2):  # kc = 2 output channels per group
            slowest = 0
            for tr, tc in itertools.product(range(2), range(2)):
                pe = 0
                for c in range(3):
                    tile = x[n, c, 3 * tr : 3 * tr + 3, 3 * tc : 3 * tc + 3]
                    a = int((tile != 0).sum())
                    wn = int((w[k0 : k0 + 2, c] != 0).sum())
                    products += a * wn
                    pe += math.ceil(a / 4) * math.ceil(wn / 4)
                slowest = max(slowest, pe)
            cycles += slowest
    assert cost.details["products"] == products
    conflict = cost.details["bank_conflict_factor"]
    assert cost.compute_cycles == pytest.approx(
        cycles * (1 + conflict) + cost.details["halo_cycles"]
    )


def pe_work_by_einsum(acts, weights, act_lanes, weight_lanes):
    """The same totals in int64 with numpy's einsum: the slow, obviously exact reference."""
    act_vectors = -(-acts.astype(np.int64) // act_lanes)
    weight_vectors = -(-weights // weight_lanes)
    per_pe = np.einsum("ngct,gkc->ngkt", act_vectors, weight_vectors)
    return {
        "barrier": int(per_pe.max(axis=-1).sum()),
        "busy": int(per_pe.sum()),
        "products": int(np.einsum("ngct,gkc->", acts.astype(np.int64), weights)),
        "vector_weights": int(np.einsum("ngct,gkc->", act_vectors, weights)),
        "activations": int(acts.sum()),
    }


@pytest.mark.parametrize("groups,chunk", [(1, 1 << 22), (1, 64), (3, 64)])
def test_pe_work_matches_an_int64_einsum(groups, chunk, monkeypatch):
    # a small chunk makes the images go through the matmul a few at a time
    monkeypatch.setattr(scnn, "MATMUL_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 40, size=(5, groups, 6, 4)).astype(np.int32)
    weights = rng.integers(0, 30, size=(groups, 3, 6))
    assert pe_work(acts, weights, 4, 8) == pe_work_by_einsum(acts, weights, 4, 8)
    # tiles as a strided [rows, cols] view, as the simulator passes them
    grid = np.zeros((5, groups, 6, 3, 3), dtype=np.int32)
    grid[..., :2, :2] = acts.reshape(5, groups, 6, 2, 2)
    assert pe_work(grid[..., :2, :2], weights, 4, 8) == pe_work_by_einsum(acts, weights, 4, 8)


def test_pe_work_stays_exact_when_fp32_matmuls_may_round():
    rng = np.random.default_rng(2)
    acts = rng.integers(0, 300, size=(3, 1, 16, 4)).astype(np.int32)
    weights = rng.integers(0, 300, size=(1, 2, 16))
    before = torch.get_float32_matmul_precision()
    assert exact_fp32_matmul()
    torch.set_float32_matmul_precision("medium")  # bf16 operands allowed: fp64 must take over
    try:
        assert not exact_fp32_matmul()
        assert pe_work(acts, weights, 1, 1) == pe_work_by_einsum(acts, weights, 1, 1)
    finally:
        torch.set_float32_matmul_precision(before)


def test_pe_work_stays_exact_beyond_fp32_and_refuses_beyond_fp64():
    rng = np.random.default_rng(1)
    # partial sums up to ~2**26: past fp32's exact integers, so fp64 must take over
    acts = rng.integers(2**20, 2**21, size=(2, 1, 8, 3)).astype(np.int32)
    weights = rng.integers(0, 9, size=(1, 2, 8))
    assert pe_work(acts, weights, 1, 1) == pe_work_by_einsum(acts, weights, 1, 1)
    huge = np.full((1, 1, 2**12, 1), 2**31 - 1, dtype=np.int64)
    with pytest.raises(HardwareError, match="exact"):
        pe_work(huge, np.full((1, 1, 2**12), 2**20), 1, 1)


def test_expected_max_bank_load_known_values():
    assert expected_max_bank_load(1, 32) == pytest.approx(1.0)
    assert expected_max_bank_load(2, 2) == pytest.approx(1.5)  # both in one bank half the time
    assert 1.0 < expected_max_bank_load(16, 32) < 3.0


def test_scnn_gets_cheaper_as_sparsity_rises_and_dcnn_does_not_speed_up():
    arch = ArchSpec(name="scnn", kind="scnn", scnn=SPEC)
    dcnn = ArchSpec(name="dcnn", kind="dcnn", scnn=dataclasses.replace(SPEC, compressed_dram=False))
    dense_record = tiny_layer(1.0, 1.0)[0]
    sparse_record = tiny_layer(0.3, 0.3)[0]
    table = horowitz45()
    assert (
        simulate_scnn(sparse_record, arch, table).cycles
        < simulate_scnn(dense_record, arch, table).cycles
    )
    assert (
        simulate_scnn(sparse_record, arch, table).energy_pj
        < simulate_scnn(dense_record, arch, table).energy_pj
    )
    assert (
        simulate_dcnn(sparse_record, dcnn, table).cycles
        == simulate_dcnn(dense_record, dcnn, table).cycles
    )


def two_of_four_layer(compliant: bool):
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 32, 3, padding=1, bias=False)
    if compliant:
        with torch.no_grad():
            w = conv.weight.view(32, 16, 4, 3, 3)
            keep = w.abs().argsort(dim=2, descending=True).argsort(dim=2) < 2
            w.mul_(keep.float())
    return capture(conv, lambda m: m(torch.randn(1, 64, 14, 14)))[0]


def test_sparse_tensor_core_exactly_halves_cycles_on_2of4_layers():
    sparse = ArchSpec(name="s", kind="tensor_core", tensor_core=TensorCoreSpec(sparse_2of4=True))
    dense = ArchSpec(name="d", kind="tensor_core", tensor_core=TensorCoreSpec(sparse_2of4=False))
    table = horowitz45()
    compliant = two_of_four_layer(True)
    assert compliant.nm_compliant
    s, d = (
        simulate_tensor_core(compliant, sparse, table),
        simulate_tensor_core(compliant, dense, table),
    )
    assert s.compute_cycles * 2 == d.compute_cycles
    assert s.details["metadata_bits"] == compliant.weight_count / 2 * 2
    assert s.energy_pj < d.energy_pj
    other = two_of_four_layer(False)
    assert not other.nm_compliant
    assert (
        simulate_tensor_core(other, sparse, table).compute_cycles
        == simulate_tensor_core(other, dense, table).compute_cycles
    )
    assert np.isfinite(s.utilization)
