"""Range estimation (observers): min-max, percentile and MSE-optimal clipping.

torch.ao's observers cover min-max and a histogram L2 search for affine uint8; they offer no
percentile and no per-channel MSE search for symmetric low-bit grids, so the three estimators
used here are written directly as tensor reductions (a grid of clipping candidates evaluated
at once, no Python loop over values).
"""

from __future__ import annotations

import torch

MSE_SAMPLES = 1 << 17


def integer_range(bits: int, signed: bool) -> tuple[int, int]:
    """The integer grid of a ``bits``-wide code: [-2^(b-1), 2^(b-1)-1] or [0, 2^b - 1]."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Round-to-nearest onto the grid ``scale * [qmin, qmax]`` (zero point 0), no STE."""
    return torch.clamp(torch.round(x / scale), qmin, qmax) * scale


def absmax_per_row(x2d: torch.Tensor) -> torch.Tensor:
    """Max |x| of each row of a [rows, cols] tensor, floored so no scale is zero."""
    return x2d.abs().amax(dim=1).clamp_min(1e-8)


def mse_scale_per_row(
    x2d: torch.Tensor, qmin: int, qmax: int, candidates: int = 80, norm: float = 2.0
) -> torch.Tensor:
    """Scale [rows] minimising the L^norm quantization error of each row of ``x2d``.

    Candidates are clipping thresholds from 20 % to 100 % of each row's max |x|, evaluated
    together: memory is candidates x rows x cols, so callers pass at most a few million values.
    """
    absmax = absmax_per_row(x2d)
    ratios = torch.linspace(0.2, 1.0, candidates, dtype=x2d.dtype, device=x2d.device)
    levels = float(max(qmax, -qmin)) if qmin < 0 else float(qmax)
    scales = ratios.view(-1, 1) * absmax.view(1, -1) / levels  # [candidates, rows]
    errors = []
    for chunk in torch.split(torch.arange(candidates, device=x2d.device), max(1, candidates // 8)):
        s = scales[chunk].unsqueeze(-1)  # [c, rows, 1]
        q = torch.clamp(torch.round(x2d.unsqueeze(0) / s), qmin, qmax) * s
        errors.append((q - x2d.unsqueeze(0)).abs().pow(norm).sum(-1))
    best = torch.cat(errors).argmin(dim=0)
    return scales.gather(0, best.view(1, -1)).squeeze(0)


def estimate_scale(
    samples: torch.Tensor, bits: int, signed: bool, method: str, percentile: float = 99.99
) -> torch.Tensor:
    """Per-tensor scale (0-dim tensor) for activation ``samples`` (any shape, flattened)."""
    qmin, qmax = integer_range(bits, signed)
    values = samples.flatten().float()
    levels = float(max(qmax, -qmin)) if signed else float(qmax)
    if method == "minmax":
        return (values.abs().max().clamp_min(1e-8) / levels).reshape(())
    if method == "percentile":
        magnitude = values.abs()
        if magnitude.numel() > 2**24:  # torch.quantile's input limit
            magnitude = magnitude[torch.randperm(magnitude.numel(), device=values.device)[: 2**24]]
        clip = torch.quantile(magnitude, percentile / 100.0).clamp_min(1e-8)
        return (clip / levels).reshape(())
    if method == "mse":
        if values.numel() > MSE_SAMPLES:
            # Bounds the search's cost for large calibration sets. 131K values is what 512
            # images give (2 batches x 64K), so the default calibration set is used whole:
            # a smaller subsample makes the chosen clip a noisier estimate.
            # Drawn on the CPU: the same subsample on every device.
            generator = torch.Generator().manual_seed(0)
            keep = torch.randperm(values.numel(), generator=generator)[:MSE_SAMPLES]
            values = values[keep.to(values.device)]
        return mse_scale_per_row(values.view(1, -1), qmin, qmax).reshape(())
    raise ValueError(f"unknown range method {method!r}")


def weight_scales(
    weight: torch.Tensor, bits: int, per_channel: bool, method: str, percentile: float = 99.99
) -> torch.Tensor:
    """Symmetric weight scales: [K] per output channel, or [1] per tensor."""
    qmin, qmax = integer_range(bits, signed=True)
    rows = weight.detach().flatten(1) if per_channel else weight.detach().reshape(1, -1)
    if method == "minmax":
        return absmax_per_row(rows) / qmax
    if method == "percentile":
        clip = torch.quantile(rows.abs(), percentile / 100.0, dim=1).clamp_min(1e-8)
        return clip / qmax
    return mse_scale_per_row(rows, qmin, qmax)
