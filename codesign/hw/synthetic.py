"""Layer records from a shape and assumed densities, for sweeps and validation against papers.

Measured records come from :func:`codesign.hw.capture.capture`; this builds the same record
when only a layer shape and densities are known (e.g. the SCNN paper's networks). Nonzeros
are drawn independently per element (binomial counts per tile / per (k, c)), so the record
has the load imbalance that random sparsity at that density produces.
"""

from __future__ import annotations

import math

import numpy as np

from codesign.hw.records import LayerRecord, frozen_array


def synthetic_record(
    name: str,
    *,
    k: int,
    c: int,
    h: int,
    w: int,
    r: int = 3,
    s: int = 3,
    stride: int = 1,
    padding: int | None = None,
    n: int = 1,
    weight_density: float = 1.0,
    act_density: float = 1.0,
    weight_bits: int = 16,
    input_bits: int = 16,
    tile_grid: tuple[int, int] = (8, 8),
    seed: int = 0,
) -> LayerRecord:
    """A conv layer record (groups = 1) with random sparsity at the given densities.

    Effectual MACs use the independence expectation dense * weight_density * act_density
    (padding excluded); a Linear layer is ``h = w = r = s = 1``.
    """
    rng = np.random.default_rng(seed)
    pad = (r // 2) if padding is None else padding
    p = (h + 2 * pad - r) // stride + 1
    q = (w + 2 * pad - s) // stride + 1
    rows, cols = tile_grid
    tile_h, tile_w = math.ceil(h / rows), math.ceil(w / cols)
    # pixels in each planar tile (the last row/column of tiles may be partial or empty)
    heights = np.clip(h - tile_h * np.arange(rows), 0, tile_h)
    widths = np.clip(w - tile_w * np.arange(cols), 0, tile_w)
    tile_sizes = np.outer(heights, widths)
    tiles = rng.binomial(np.broadcast_to(tile_sizes, (n, c, rows, cols)), act_density)
    per_kc = rng.binomial(r * s, weight_density, size=(k, c))
    dense = n * k * c * p * q * r * s
    # fraction of window taps that fall on real (unpadded) pixels
    inside = _inside_fraction(h, r, stride, pad, p) * _inside_fraction(w, s, stride, pad, q)
    return LayerRecord(
        name=name,
        op="conv" if r * s * h * w > 1 else "linear",
        n=n,
        k=k,
        c=c,
        p=p,
        q=q,
        r=r,
        s=s,
        h=h,
        w=w,
        stride=(stride, stride),
        padding=(pad, pad),
        groups=1,
        weight_bits=weight_bits,
        input_bits=input_bits,
        dense_macs=dense,
        weight_count=k * c * r * s,
        weight_nonzeros=int(per_kc.sum()),
        input_count=n * c * h * w,
        input_nonzeros=int(tiles.sum()),
        effectual_macs=round(dense * inside * weight_density * act_density),
        input_nonzeros_per_tile=frozen_array(tiles, np.int32),
        weight_nonzeros_per_kc=frozen_array(per_kc),
        nm_compliant=False,
    )


def _inside_fraction(size: int, kernel: int, stride: int, pad: int, out: int) -> float:
    """Share of (output, tap) pairs along one axis whose input lies inside the image."""
    positions = np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] - pad
    return float(((positions >= 0) & (positions < size)).mean())
