"""Quantizers: weight fake-quant as a parametrization, activation fake-quant as a module.

Forward rounding uses torch's fake-quantize ops (straight-through estimator built in). When a
quantizer's step size is learned (LSQ, Esser et al. 2020), the forward is written out with a
rounding STE so the gradient w.r.t. the step size follows the LSQ paper, including its
gradient scale 1/sqrt(numel * qmax); torch's learnable fake-quant op is private API.

Quantizers compute in fp32 even inside a bf16 autocast region (``--amp bf16``): bf16's 8-bit
significand cannot hold x / s on an 8-bit grid exactly, so rounding would pick wrong codes.
Their scales stay on the device: no forward pass reads a scale back to the host.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from codesign import distributed
from codesign.quant.ranges import estimate_scale, integer_range, weight_scales


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass."""
    return (torch.round(x) - x).detach() + x


def grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Forward: x. Backward: gradient multiplied by ``factor`` (LSQ's step-size scaling)."""
    return (x - x * factor).detach() + x * factor


_Forward = Callable[[Any, torch.Tensor], torch.Tensor]


def _autocast_on(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (torch < 2.4 asks per device kind)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def in_fp32(forward: _Forward) -> _Forward:
    """Decorate a quantizer's ``forward(self, x)``: run it on fp32 ``x`` with autocast off
    when autocast is on for ``x``'s device; unchanged otherwise."""

    @functools.wraps(forward)
    def wrapped(self: Any, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        if not _autocast_on(device_type):
            return forward(self, x)
        with torch.autocast(device_type, enabled=False):
            return forward(self, x.float())

    return wrapped


def lsq_quantize(
    x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int, grad_factor: float
) -> torch.Tensor:
    """LSQ fake quantization: s * clamp(round(x / s), qmin, qmax) with learned s."""
    s = grad_scale(scale, grad_factor)
    return torch.clamp(round_ste(x / s), qmin, qmax) * s


def _zero_point(like: torch.Tensor) -> torch.Tensor:
    """The zero point 0 (int32, on ``like``'s device) of the symmetric grids."""
    return torch.zeros((), dtype=torch.int32, device=like.device)


class WeightQuantizer(nn.Module):
    """Symmetric weight fake-quant; registered as a parametrization on a layer's ``weight``.

    ``scale`` has shape [K, 1, ..., 1] (per output channel) or [1, 1, ..., 1] (per tensor), so
    it broadcasts over the weight [K, C, R, S] / [K, C]. Zero stays exactly zero.
    """

    def __init__(self, weight_shape: torch.Size, bits: int, per_channel: bool = True) -> None:
        super().__init__()
        self.bits = bits
        self.per_channel = per_channel
        self.qmin, self.qmax = integer_range(bits, signed=True)
        rows = weight_shape[0] if per_channel else 1
        view = (rows,) + (1,) * (len(weight_shape) - 1)
        self.scale = nn.Parameter(torch.ones(view), requires_grad=False)
        self.enabled = True
        self.learn_scale = False  # LSQ during QAT

    def calibrate(self, weight: torch.Tensor, method: str, percentile: float = 99.99) -> None:
        """Set ``scale`` from the weight [K, ...] with the given range method."""
        scales = weight_scales(weight, self.bits, self.per_channel, method, percentile)
        self.scale.data.copy_(scales.view_as(self.scale))

    @in_fp32
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        if self.learn_scale:
            factor = 1.0 / math.sqrt(weight[0].numel() * self.qmax)
            return lsq_quantize(weight, self.scale.abs() + 1e-12, self.qmin, self.qmax, factor)
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(
                weight,
                self.scale.detach().flatten(),
                torch.zeros(self.scale.shape[0], dtype=torch.int32, device=weight.device),
                0,
                self.qmin,
                self.qmax,
            )
        return torch.fake_quantize_per_tensor_affine(
            weight, self.scale.detach().reshape(()), _zero_point(weight), self.qmin, self.qmax
        )

    def integer_codes(self, weight: torch.Tensor) -> torch.Tensor:
        """Integer codes [K, ...] (int32) such that weight_q = codes * scale."""
        return torch.clamp(torch.round(weight / self.scale), self.qmin, self.qmax).to(torch.int32)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}"


class ActQuantizer(nn.Module):
    """Per-tensor activation fake-quant with zero point 0.

    Unsigned grid [0, 2^b - 1] when calibration saw no negative input (after ReLU), signed
    otherwise. Modes: ``observe`` collects a subsample of the inputs for range estimation,
    ``quantize`` fake-quantizes, ``off`` passes through. The signedness is a buffer so it is
    saved in checkpoints.
    """

    SAMPLES_PER_BATCH = 1 << 16  # enough for a percentile to 1e-5 precision per layer

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.scale = nn.Parameter(torch.tensor(1.0), requires_grad=False)
        self.register_buffer("signed", torch.tensor(False))
        self.mode = "quantize"
        self.learn_scale = False
        self._samples: list[torch.Tensor] = []
        self._min_seen: torch.Tensor | None = None  # on the device: no host sync per batch

    @property
    def qrange(self) -> tuple[int, int]:
        return integer_range(self.bits, bool(self.signed))

    @in_fp32
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return x
        if self.mode == "observe":
            flat = x.detach().flatten()
            stride = max(1, flat.numel() // self.SAMPLES_PER_BATCH)
            self._samples.append(flat[::stride].clone())
            low = flat.min()
            self._min_seen = low if self._min_seen is None else torch.minimum(self._min_seen, low)
            return x
        qmin, qmax = self.qrange
        if self.learn_scale:
            factor = 1.0 / math.sqrt(x[0].numel() * qmax)
            return lsq_quantize(x, self.scale.abs() + 1e-12, qmin, qmax, factor)
        return torch.fake_quantize_per_tensor_affine(
            x, self.scale.detach(), _zero_point(x), qmin, qmax
        )

    def finish_observation(self, method: str, percentile: float = 99.99) -> None:
        """Turn the observed samples into ``signed`` and ``scale``; switch to ``quantize``.

        Under torch.distributed each rank observed its shard of the calibration set: the
        samples of every rank are gathered (in rank order) and the minimum is reduced, so
        every rank estimates the scale of the whole set from the same values.
        """
        if not self._samples or self._min_seen is None:
            raise RuntimeError("activation quantizer saw no data during calibration")
        samples = distributed.all_gather_cat(torch.cat(self._samples))
        low = distributed.all_reduce_(self._min_seen.reshape(1).clone(), "min")
        self.signed.fill_(bool(low < 0))
        self.scale.data.copy_(
            estimate_scale(samples, self.bits, bool(self.signed), method, percentile)
        )
        self._samples, self._min_seen = [], None
        self.mode = "quantize"

    def integer_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of an input tensor (int32): x_q = codes * scale."""
        qmin, qmax = self.qrange
        return torch.clamp(torch.round(x / self.scale), qmin, qmax).to(torch.int32)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={bool(self.signed)}, mode={self.mode}"
