"""im2col rows of a Conv2d/Linear input: what the layer-wise solvers' Gram matrices and
Hessians are made of.

A row holds the inputs one output position multiplies, so the layer's output there is
``W.flatten(1) @ row``. Rows come in (batch, output row, output column) order, as
``F.unfold(x).transpose(1, 2)`` gives them, with the same values; built here from R x S strided
views of the padded input (one copy, about 10x faster than unfold's layout plus a transpose),
or only at chosen positions when a solver samples rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codesign.errors import QuantError


def _geometry(layer: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(padded input [B, Hp, Wp, C] (a view), output height, output width)."""
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise QuantError(
            f"layer-wise solvers need numeric zero padding; this conv has padding "
            f"{layer.padding!r}, mode {layer.padding_mode!r}: give it explicit zero padding"
        )
    (pad_h, pad_w), (k_h, k_w) = layer.padding, layer.kernel_size
    (stride_h, stride_w), (dil_h, dil_w) = layer.stride, layer.dilation
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h)).permute(0, 2, 3, 1)
    out_h = (padded.shape[1] - dil_h * (k_h - 1) - 1) // stride_h + 1
    out_w = (padded.shape[2] - dil_w * (k_w - 1) - 1) // stride_w + 1
    return padded, out_h, out_w


def im2col(layer: nn.Module, x: torch.Tensor, channel_last: bool = False) -> torch.Tensor:
    """Rows [N, D] of input ``x`` ([B, C, H, W], or [..., C] for a Linear): columns
    (C, R, S) as ``W.flatten(1)``, or (R, S, C) with ``channel_last`` (N:M groups of input
    channels adjacent)."""
    if not isinstance(layer, nn.Conv2d):
        return x.reshape(-1, x.shape[-1])
    padded, out_h, out_w = _geometry(layer, x)
    (k_h, k_w), (stride_h, stride_w) = layer.kernel_size, layer.stride
    dil_h, dil_w = layer.dilation
    taps = [
        padded[
            :,
            r * dil_h : r * dil_h + stride_h * (out_h - 1) + 1 : stride_h,
            s * dil_w : s * dil_w + stride_w * (out_w - 1) + 1 : stride_w,
        ]
        for r in range(k_h)
        for s in range(k_w)
    ]  # each [B, out_h, out_w, C]
    stacked = torch.stack(taps, dim=3 if channel_last else 4)  # [..., RS, C] or [..., C, RS]
    return stacked.reshape(x.shape[0] * out_h * out_w, -1)


def im2col_row_count(layer: nn.Module, x: torch.Tensor) -> int:
    """Number of rows :func:`im2col` gives for ``x``, without building them."""
    if not isinstance(layer, nn.Conv2d):
        return x.numel() // x.shape[-1]
    _, out_h, out_w = _geometry(layer, x[:1])
    return x.shape[0] * out_h * out_w


def im2col_rows(layer: nn.Module, batches: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Rows [len(index), D] (columns (C, R, S)) of ``torch.cat([im2col(layer, x) for x in
    batches])`` at ``index``, in that order, gathering only those positions' patches."""
    counts = [im2col_row_count(layer, x) for x in batches]
    if isinstance(layer, nn.Conv2d):
        size = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
    else:
        size = batches[0].shape[-1]
    out = batches[0].new_empty(len(index), size)
    start = 0
    for x, count in zip(batches, counts, strict=True):
        chosen = (index >= start) & (index < start + count)
        where = chosen.nonzero().squeeze(1).to(x.device)
        local = (index[chosen] - start).to(x.device)
        start += count
        if not isinstance(layer, nn.Conv2d):
            out[where] = x.reshape(-1, x.shape[-1])[local]
            continue
        padded, out_h, out_w = _geometry(layer, x)
        image, position = local // (out_h * out_w), local % (out_h * out_w)
        rows = (position // out_w)[:, None] * layer.stride[0] + (
            torch.arange(layer.kernel_size[0], device=x.device) * layer.dilation[0]
        )
        columns = (position % out_w)[:, None] * layer.stride[1] + (
            torch.arange(layer.kernel_size[1], device=x.device) * layer.dilation[1]
        )
        patches = padded[image[:, None, None], rows[:, :, None], columns[:, None, :]]
        out[where] = patches.permute(0, 3, 1, 2).reshape(len(local), -1)  # [m, C, R, S]
    return out
