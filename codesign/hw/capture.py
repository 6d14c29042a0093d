"""Observe the real tensors of every Conv2d/Linear and reduce them to ``LayerRecord``s.

This is the project's only forward-hook site. Each hook reduces the layer's input right away
(nonzero counts, exact effectual MACs, per-tile nonzeros for SCNN's PE grid) and drops the
tensor, so memory stays flat however many batches the caller's ``forward_loop`` runs.

The input counted is what the MACs really see: for a quantized layer (a module with a child
named ``input_quantizer``) the quantizer's output, else the layer's own input. The weight is
``module.weight``: with parametrizations that is already masked and fake-quantized, so pruned
zeros are exact zeros. Bit widths come from plain ``weight_bits``/``input_bits`` attributes
(absent means float, 32 bits); nothing here imports the quantization or sparsity packages.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from codesign.errors import HardwareError
from codesign.hw.records import LayerRecord, frozen_array

FLOAT_BITS = 32  # a layer without ``weight_bits``/``input_bits`` computes in fp32


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _LayerStats:
    """Running sums for one layer across every batch the forward loop feeds it."""

    def __init__(self, name: str, module: nn.Module, tile_grid: tuple[int, int]) -> None:
        self.name = name
        self.module = module
        self.tile_grid = tile_grid
        self.is_conv = isinstance(module, nn.Conv2d)
        self.calls = 0
        self.n = 0
        self.dense_macs = 0
        self.input_count = 0
        self.input_nonzeros = 0
        self.effectual_macs = 0
        self.input_signed = False
        self.tiles: list[np.ndarray] = []
        self.geometry: tuple[int, ...] | None = None  # (c_total, h, w, p, q, pad_h, pad_w)
        self.weight_mask: torch.Tensor | None = None
        self.weights_per_tap: torch.Tensor | None = None

    # -- weights: read once, they do not change during an eval-mode capture ------------------
    def _weight_mask(self) -> torch.Tensor:
        if self.weight_mask is None:
            self.weight_mask = (self.module.weight.detach() != 0).float()
        return self.weight_mask

    def observe(self, x: torch.Tensor) -> None:
        """Reduce one batch of layer input ``x`` into the running sums."""
        x = x.detach()
        # 0/1 in fp32: sums of up to 2**24 ones are exact, and pooling kernels are fast
        x_nonzero = (x != 0).float()
        w_mask = self._weight_mask()
        if self.is_conv:
            if x_nonzero.dim() == 3:  # unbatched conv input [C, H, W]
                x_nonzero = x_nonzero.unsqueeze(0)
            effectual = self._observe_conv(x_nonzero, w_mask)
        else:
            x_nonzero = x_nonzero.reshape(-1, x_nonzero.shape[-1])  # rows are samples/tokens
            effectual = self._observe_linear(x_nonzero, w_mask)
        self.calls += 1
        self.effectual_macs += effectual
        self.input_count += x.numel()
        self.input_nonzeros += int(self.tiles[-1].sum(dtype=np.int64))
        if self.calls == 1:  # the sign of the input range is a property of the layer
            self.input_signed = bool(x.min() < 0)

    def _observe_conv(self, x_nonzero: torch.Tensor, w_mask: torch.Tensor) -> int:
        conv: nn.Conv2d = self.module  # type: ignore[assignment]
        n, c_total, h, w = x_nonzero.shape
        k, c_per_group, r, s = w_mask.shape
        stride, dil = _pair(conv.stride), _pair(conv.dilation)
        if isinstance(conv.padding, str):  # "valid" or "same" (symmetric for odd kernels)
            same = conv.padding == "same"
            pad = (dil[0] * (r - 1) // 2, dil[1] * (s - 1) // 2) if same else (0, 0)
        else:
            pad = _pair(conv.padding)
        p = (h + 2 * pad[0] - dil[0] * (r - 1) - 1) // stride[0] + 1
        q = (w + 2 * pad[1] - dil[1] * (s - 1) - 1) // stride[1] + 1
        self._check_geometry((c_total, h, w, p, q, pad[0], pad[1]))
        self.n += n
        self.dense_macs += n * k * c_per_group * p * q * r * s
        self.tiles.append(self._tile_counts(x_nonzero))
        # Effectual MACs = sum over (c, r, s) of [nonzero weights at (c, r, s) over the output
        # channels that read c] x [nonzero inputs that tap (c, r, s) meets over all outputs
        # (n, p, q)]. The second factor is a strided window sum of the batch-summed nonzero
        # map (one strided view, one reduction): C*R*S*P*Q work instead of the layer's
        # K*C*R*S*P*Q. Zero padding contributes nothing; all sums are exact integers.
        per_channel = F.pad(x_nonzero.sum(0), (pad[1], pad[1], pad[0], pad[0]))
        sc, sh, sw = per_channel.stride()
        # windows[c, i, j, a, b] = per_channel[c, i*dil + a*stride, j*dil + b*stride]: one view
        windows = per_channel.as_strided(
            (c_total, r, s, p, q),
            (sc, dil[0] * sh, dil[1] * sw, stride[0] * sh, stride[1] * sw),
        )
        taps = windows.sum((3, 4), dtype=torch.float64)  # exact: integers far below 2**53
        return int((taps * self._weights_per_tap()).sum().item())

    def _weights_per_tap(self) -> torch.Tensor:
        """[C_total, R, S]: nonzero weights at each (input channel, tap) over the output
        channels that read that input channel (per group)."""
        if self.weights_per_tap is None:
            w_mask = self._weight_mask()
            k, c_per_group, r, s = w_mask.shape
            groups = int(self.module.groups)  # type: ignore[arg-type]
            per_group = w_mask.view(groups, k // groups, c_per_group, r, s).sum(1)
            self.weights_per_tap = per_group.reshape(groups * c_per_group, r, s).double()
        return self.weights_per_tap

    def _observe_linear(self, x_nonzero: torch.Tensor, w_mask: torch.Tensor) -> int:
        rows, features = x_nonzero.shape
        # sum_n sum_k sum_c x[n,c] w[k,c] = sum_c (sum_n x[n,c]) * (sum_k w[k,c]), in int64.
        per_feature_inputs = x_nonzero.sum(0, dtype=torch.int64)
        per_feature_weights = w_mask.sum(0).to(torch.int64)
        effectual = int((per_feature_inputs * per_feature_weights).sum())
        self._check_geometry((features, 1, 1, 1, 1, 0, 0))
        self.n += rows
        self.dense_macs += rows * w_mask.shape[0] * features
        self.tiles.append(self._tile_counts(x_nonzero.view(rows, features, 1, 1)))
        return effectual

    def _check_geometry(self, geometry: tuple[int, ...]) -> None:
        if self.geometry is None:
            self.geometry = geometry
        elif self.geometry != geometry:
            raise HardwareError(
                f"layer {self.name} saw inputs of different shapes across batches "
                f"({self.geometry[:3]} then {geometry[:3]}): capture with one input size"
            )

    def _tile_counts(self, x_nonzero: torch.Tensor) -> np.ndarray:
        """Nonzeros per planar tile: [N, C, tile_rows, tile_cols] (SCNN's PT partition)."""
        h, w = x_nonzero.shape[-2:]
        rows, cols = self.tile_grid
        tile_h, tile_w = math.ceil(h / rows), math.ceil(w / cols)
        if (tile_h * rows, tile_w * cols) != (h, w):  # the last tiles are partial (or empty)
            x_nonzero = F.pad(x_nonzero, (0, tile_w * cols - w, 0, tile_h * rows - h))
        # a sum-pool over each tile (avg-pool with divisor 1): exact small integers in fp32
        counts = F.avg_pool2d(x_nonzero, (tile_h, tile_w), divisor_override=1)
        return counts.to(torch.int32).cpu().numpy()

    def record(self) -> LayerRecord:
        if self.geometry is None:
            raise HardwareError(
                f"layer {self.name} never ran: the forward_loop must feed at least one batch "
                "through the model (or remove the layer from the model)"
            )
        _c_total, h, w, p, q, pad_h, pad_w = self.geometry
        w_mask = self._weight_mask()
        if self.is_conv:
            k, c, r, s = w_mask.shape
            conv: nn.Conv2d = self.module  # type: ignore[assignment]
            stride, groups, op = _pair(conv.stride), int(conv.groups), "conv"
        else:
            (k, c), r, s, stride, groups, op = w_mask.shape, 1, 1, (1, 1), 1, "linear"
        per_kc = w_mask.view(k, c, r * s).sum(-1).to(torch.int64).cpu().numpy()
        return LayerRecord(
            name=self.name,
            op=op,
            n=self.n,
            k=k,
            c=c,
            p=p,
            q=q,
            r=r,
            s=s,
            h=h,
            w=w,
            stride=stride,
            padding=(pad_h, pad_w),
            groups=groups,
            weight_bits=int(getattr(self.module, "weight_bits", FLOAT_BITS)),
            input_bits=int(getattr(self.module, "input_bits", FLOAT_BITS)),
            dense_macs=self.dense_macs,
            weight_count=int(w_mask.numel()),
            weight_nonzeros=int(w_mask.sum().item()),
            input_count=self.input_count,
            input_nonzeros=self.input_nonzeros,
            effectual_macs=self.effectual_macs,
            input_nonzeros_per_tile=frozen_array(np.concatenate(self.tiles), np.int32),
            weight_nonzeros_per_kc=frozen_array(per_kc),
            nm_compliant=is_2of4_compliant(w_mask),
            input_signed=self.input_signed,
        )


def is_2of4_compliant(weight_mask: torch.Tensor) -> bool:
    """True when every group of 4 consecutive input channels (at each k, r, s) keeps <= 2.

    ``weight_mask`` is [K, C, R, S] or [K, C]; C must be a multiple of 4.
    """
    k, c = weight_mask.shape[:2]
    if c % 4:
        return False
    groups = weight_mask.reshape(k, c // 4, 4, -1)
    return bool((groups.sum(dim=2) <= 2).all())


class Recorder:
    """Holds the per-layer running sums while hooks are installed."""

    def __init__(self, stats: list[_LayerStats]) -> None:
        self._stats = stats

    def records(self) -> list[LayerRecord]:
        """One immutable record per Conv2d/Linear, in module order."""
        return [layer.record() for layer in self._stats]


@contextlib.contextmanager
def hooked(model: nn.Module, *, tile_grid: tuple[int, int] = (8, 8)) -> Iterator[Recorder]:
    """Install the observing hooks on every Conv2d/Linear; remove them on exit, even on error."""
    if len(tile_grid) != 2 or min(tile_grid) < 1:
        raise HardwareError(f"tile_grid must be two positive ints (rows, cols), got {tile_grid}")
    stats: list[_LayerStats] = []
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in model.named_modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            layer = _LayerStats(name, module, (int(tile_grid[0]), int(tile_grid[1])))
            stats.append(layer)
            quantizer = getattr(module, "input_quantizer", None)
            if isinstance(quantizer, nn.Module):
                # The quantizer's output is the (fake-)quantized input the MACs consume.
                handles.append(quantizer.register_forward_hook(_output_hook(layer)))
            else:
                handles.append(module.register_forward_pre_hook(_input_hook(layer)))
        if not stats:
            raise HardwareError("the model has no Conv2d or Linear layer to capture")
        yield Recorder(stats)
    finally:
        for handle in handles:
            handle.remove()


def _input_hook(layer: _LayerStats) -> Callable[..., None]:
    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        layer.observe(args[0])

    return hook


def _output_hook(layer: _LayerStats) -> Callable[..., None]:
    def hook(_module: nn.Module, _args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        layer.observe(output)

    return hook


def capture(
    model: nn.Module,
    forward_loop: Callable[[nn.Module], object],
    *,
    tile_grid: tuple[int, int] = (8, 8),
) -> list[LayerRecord]:
    """Run ``forward_loop(model)`` in eval mode without gradients and return the records.

    ``tile_grid`` (rows, cols) is the planar partition of every input for SCNN's PE grid.
    The model's train/eval mode is restored afterwards; hooks are removed even on error.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    >>> records = capture(net, lambda m: m(torch.ones(2, 1, 4, 4)))
    >>> [(r.name, r.dense_macs) for r in records]
    [('0', 576), ('3', 192)]
    """
    was_training = model.training
    model.eval()
    try:
        with hooked(model, tile_grid=tile_grid) as recorder, torch.no_grad():
            forward_loop(model)
        return recorder.records()
    finally:
        model.train(was_training)
