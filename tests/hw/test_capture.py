from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from codesign.errors import HardwareError
from codesign.hw import nonzeros
from codesign.hw.capture import capture, is_2of4_compliant


def brute_force_effectual(
    x: torch.Tensor, w: torch.Tensor, stride: int, pad: int, groups: int
) -> int:
    """Count products with both operands nonzero by walking the loop nest (tiny layers only)."""
    n, _c_total, h, wd = x.shape
    k, cg, r, s = w.shape
    kg = k // groups
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    wn = w.numpy()
    p = (h + 2 * pad - r) // stride + 1
    q = (wd + 2 * pad - s) // stride + 1
    count = 0
    for b, kk, i, j, c, rr, ss in itertools.product(
        range(n), range(k), range(p), range(q), range(cg), range(r), range(s)
    ):
        channel = (kk // kg) * cg + c
        if xp[b, channel, i * stride + rr, j * stride + ss] != 0 and wn[kk, c, rr, ss] != 0:
            count += 1
    return count


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,groups",
    [
        (3, 4, 3, 1, 1, 1),
        (4, 4, 3, 2, 1, 1),
        (4, 4, 3, 1, 0, 2),
        (4, 4, 1, 2, 0, 4),
        (2, 3, 5, 2, 2, 1),
        (4, 6, 1, 1, 0, 1),  # 1x1, stride 1: counted from the tile sums
        (4, 4, 1, 1, 0, 2),
    ],
)
def test_effectual_macs_match_brute_force(
    cin, cout, k, stride, pad, groups, make_conv, make_record
):
    conv = make_conv(cin, cout, k, stride, pad, groups)
    torch.manual_seed(2)
    x = torch.relu(torch.randn(2, cin, 7, 7))
    record = make_record(conv, x)
    assert record.effectual_macs == brute_force_effectual(
        x, conv.weight.detach(), stride, pad, groups
    )
    # closed form of dense MACs: N K (C/G) P Q R S
    p = (7 + 2 * pad - k) // stride + 1
    assert (record.p, record.q) == (p, p)
    assert record.dense_macs == 2 * cout * (cin // groups) * p * p * k * k
    assert record.input_nonzeros == int(torch.count_nonzero(x))
    assert record.weight_nonzeros == int(torch.count_nonzero(conv.weight))
    assert record.input_nonzeros_per_tile.sum() == record.input_nonzeros


def tile_counts_by_loop(x: torch.Tensor, rows: int, cols: int) -> np.ndarray:
    """[N, C, rows, cols] nonzeros per planar tile, tile by tile (the last may be partial or
    empty)."""
    n, c, h, w = x.shape
    tile_h, tile_w = math.ceil(h / rows), math.ceil(w / cols)
    counts = np.zeros((n, c, rows, cols), dtype=np.int64)
    for i, j in itertools.product(range(rows), range(cols)):
        tile = x[:, :, i * tile_h : (i + 1) * tile_h, j * tile_w : (j + 1) * tile_w]
        counts[:, :, i, j] = (tile != 0).sum((2, 3)).numpy()
    return counts


@pytest.mark.parametrize(
    "size,grid",
    [
        ((16, 16), (8, 8)),  # tiles of 2x2: rows, then columns, added as slices
        ((32, 24), (8, 8)),  # 4x3
        ((64, 90), (2, 4)),  # 32x23 with a partial last column: long sides reduced
        ((8, 32), (8, 8)),  # 1x4: one pixel row per tile
        ((36, 3), (4, 3)),  # 9x1: one pixel column per tile
        ((7, 7), (8, 8)),  # one pixel per tile, the last row and column empty
        ((8, 8), (8, 8)),  # one pixel per tile, exactly
        ((31, 29), (8, 8)),  # partial last tiles
        ((9, 20), (3, 5)),
        ((5, 13), (4, 2)),  # partial rows with empty ones, wide tiles
    ],
)
def test_tile_counts_match_a_loop_over_tiles(size, grid):
    torch.manual_seed(3)
    x = torch.relu(torch.randn(2, 3, *size))
    conv = nn.Conv2d(3, 2, 1)
    record = capture(conv, lambda m: m(x), tile_grid=grid)[0]
    assert record.input_nonzeros_per_tile.dtype == np.int16
    np.testing.assert_array_equal(record.input_nonzeros_per_tile, tile_counts_by_loop(x, *grid))


# 300 elements: one image per slice; one spare batch: the host buffer grows twice
@pytest.mark.parametrize("slice_elements,spare", [(1 << 20, 8), (300, 1)])
def test_conv_batches_accumulate_like_one_batch(slice_elements, spare, monkeypatch):
    monkeypatch.setattr(nonzeros, "CPU_SLICE_ELEMENTS", slice_elements)
    monkeypatch.setattr(nonzeros, "SPARE_BATCHES", spare)
    monkeypatch.setattr(nonzeros, "MMAP_BYTES", 0 if spare == 1 else nonzeros.MMAP_BYTES)
    torch.manual_seed(4)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1))
    xs = [torch.randn(2, 3, 9, 9) for _ in range(3)]
    batched = capture(conv, lambda m: [m(x) for x in xs])
    monkeypatch.setattr(nonzeros, "CPU_SLICE_ELEMENTS", 1 << 20)
    whole = capture(conv, lambda m: m(torch.cat(xs)))
    for a, b in zip(batched, whole, strict=True):
        assert (a.n, a.dense_macs, a.input_nonzeros, a.effectual_macs, a.input_signed) == (
            b.n,
            b.dense_macs,
            b.input_nonzeros,
            b.effectual_macs,
            b.input_signed,
        )
        np.testing.assert_array_equal(a.input_nonzeros_per_tile, b.input_nonzeros_per_tile)


def test_tile_counts_take_the_narrowest_type_that_holds_a_full_tile():
    assert nonzeros.tile_count_dtype(28 * 28) == np.int16
    assert nonzeros.tile_count_dtype(32_767) == np.int16
    assert nonzeros.tile_count_dtype(32_768) == np.int32
    # a 200x200 input on a 1x1 grid: one tile of 40,000 pixels, all nonzero
    x = torch.ones(1, 2, 200, 200)
    record = capture(nn.Conv2d(2, 1, 1), lambda m: m(x), tile_grid=(1, 1))[0]
    assert record.input_nonzeros_per_tile.dtype == np.int32
    assert record.input_nonzeros_per_tile.tolist() == [[[[40_000]], [[40_000]]]]


@pytest.mark.parametrize("on_host", [True, False])
@pytest.mark.parametrize("pixels_per_tile,dtype", [(12, np.int16), (40_000, np.int32)])
def test_tile_store_keeps_images_in_order_with_empty_tiles_zero(
    on_host, pixels_per_tile, dtype, monkeypatch
):
    monkeypatch.setattr(nonzeros, "SPARE_BATCHES", 1)  # the host buffer grows on every add
    monkeypatch.setattr(nonzeros, "MMAP_BYTES", 0)
    torch.manual_seed(5)
    store = nonzeros.TileStore((3, 4), 2, on_host, pixels_per_tile)
    pieces = [torch.randint(1, 9, (n, 2, 2, 3)).float() for n in (2, 1, 3)]
    for piece in pieces:
        store.add(piece)
    array = store.array()
    expected = np.zeros((6, 2, 3, 4), dtype=dtype)
    expected[:, :, :2, :3] = torch.cat(pieces).numpy()
    assert array.dtype == dtype and not array.flags.writeable
    np.testing.assert_array_equal(array, expected)


def test_linear_record_and_batches_accumulate():
    torch.manual_seed(0)
    fc = nn.Linear(6, 5)
    with torch.no_grad():
        fc.weight[:, :2] = 0
    xs = [torch.relu(torch.randn(3, 6)) for _ in range(2)]
    record = capture(fc, lambda m: [m(x) for x in xs])[0]
    x = torch.cat(xs)
    assert (record.op, record.n, record.k, record.c) == ("linear", 6, 5, 6)
    assert record.dense_macs == 6 * 5 * 6
    assert record.effectual_macs == int(((x != 0).float() @ (fc.weight != 0).float().T).sum())


def test_tiles_have_the_grid_shape_and_records_are_immutable(conv_record):
    assert conv_record.input_nonzeros_per_tile.shape == (2, 8, 8, 8)
    assert conv_record.weight_nonzeros_per_kc.shape == (16, 8)
    with pytest.raises(ValueError):
        conv_record.input_nonzeros_per_tile[0, 0, 0, 0] = 1
    with pytest.raises(AttributeError):
        conv_record.k = 3  # type: ignore[misc]


def test_hooks_removed_on_error_and_mode_restored():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)).train()

    def failing_loop(model):
        model(torch.ones(1, 1, 4, 4))
        raise RuntimeError("data loader broke")

    with pytest.raises(RuntimeError):
        capture(net, failing_loop)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert net.training
    capture(net, lambda m: m(torch.ones(1, 1, 4, 4)))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_quantized_layer_counts_the_quantizer_output_and_reads_bits(make_record):
    class ToZero(nn.Module):  # stands in for an activation quantizer that rounds small values to 0
        def forward(self, x):
            return torch.where(x.abs() < 0.5, torch.zeros_like(x), x)

    class QuantConv(nn.Conv2d):
        def __init__(self):
            super().__init__(2, 2, 1, bias=False)
            self.input_quantizer = ToZero()
            self.weight_bits, self.input_bits = 4, 8

        def forward(self, x):
            return super().forward(self.input_quantizer(x))

    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 4)
    record = make_record(QuantConv(), x)
    assert record.input_nonzeros == int((x.abs() >= 0.5).sum())
    assert (record.weight_bits, record.input_bits) == (4, 8)
    assert record.input_signed


def test_2of4_compliance():
    mask = torch.tensor([[1, 1, 0, 0, 0, 1, 0, 1]], dtype=torch.float32)
    assert is_2of4_compliant(mask)
    assert not is_2of4_compliant(torch.ones(1, 8))
    assert not is_2of4_compliant(torch.ones(1, 6))


def test_model_without_layers_is_an_error():
    with pytest.raises(HardwareError, match="no Conv2d or Linear"):
        capture(nn.ReLU(), lambda m: m(torch.ones(1)))
