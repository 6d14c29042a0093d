"""Observe the real tensors of every Conv2d/Linear and reduce them to ``LayerRecord``s.

This is the project's only forward-hook site. Each hook reduces the layer's input right away
(nonzero counts, exact effectual MACs, per-tile nonzeros for SCNN's PE grid) and drops the
tensor: what is kept grows only by the per-tile counts, C x tile_rows x tile_cols int32 per
image and layer (SCNN's per-image barriers need them; ResNet-50 at 8x8 tiles: 6.3 MB per
image), never by activations. The reductions run on the layer's device with no host
synchronisation per batch; the record moves them to the host once, at the end.

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
EXACT_FP32 = 2**24  # integers below this add exactly in fp32
ROW_SUM_FIRST_FROM = 4  # tile height from which summing tile rows first beats one matmul


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _MaskScratch:
    """One reusable fp32 buffer per device for the 0/1 nonzero masks of the layer inputs.

    Hooks run one at a time, so every layer's mask can live in the same memory: no
    activation-sized allocation per layer and batch (on the CPU a fresh one that large is
    page-faulted in each time, which costs more than computing the mask).
    """

    def __init__(self) -> None:
        self._buffers: dict[torch.device, torch.Tensor] = {}

    def nonzero_mask(self, x: torch.Tensor) -> torch.Tensor:
        """(x != 0) as 0/1 fp32 of ``x``'s shape, valid until the next call."""
        buffer = self._buffers.get(x.device)
        if buffer is None or buffer.numel() < x.numel():
            buffer = torch.empty(x.numel(), dtype=torch.float32, device=x.device)
            self._buffers[x.device] = buffer
        return torch.ne(x, 0, out=buffer[: x.numel()].view(x.shape))


def _tile_indicator(size: int, tiles: int, device: torch.device) -> torch.Tensor:
    """[size, tiles] 0/1: pixel i belongs to tile i // ceil(size / tiles) (the last tiles may
    be partial or empty), so ``rows @ indicator`` sums each tile."""
    tile = math.ceil(size / tiles)
    indicator = torch.zeros(size, tiles, dtype=torch.float32, device=device)
    pixels = torch.arange(size, device=device)
    indicator[pixels, pixels // tile] = 1.0
    return indicator


class _LayerStats:
    """Running reductions for one layer across every batch the forward loop feeds it.

    Everything stays on the layer's device until :meth:`record`: counts accumulate as 0-d
    fp64 tensors (exact integers) and the per-tile counts [n, C, tile_rows, tile_cols] as one
    fp32 tensor per batch, the only state that grows with the number of images.
    """

    def __init__(
        self, name: str, module: nn.Module, tile_grid: tuple[int, int], scratch: _MaskScratch
    ) -> None:
        self.name = name
        self.module = module
        self.tile_grid = tile_grid
        self.scratch = scratch
        self.is_conv = isinstance(module, nn.Conv2d)
        self.calls = 0
        self.n = 0
        self.dense_macs = 0
        self.input_count = 0
        self.input_nonzeros: torch.Tensor | int = 0
        self.effectual_macs: torch.Tensor | int = 0
        self.input_min: torch.Tensor | None = None
        self.tiles: list[torch.Tensor] = []  # per batch, fp32 counts on the device
        self.tiles_array: np.ndarray | None = None
        self.geometry: tuple[int, ...] | None = None  # (c_total, h, w, p, q, pad_h, pad_w)
        self.weight_mask: torch.Tensor | None = None
        self.weights_per_tap: torch.Tensor | None = None
        self.col_indicator: torch.Tensor | None = None

    # -- weights: read once, they do not change during an eval-mode capture ------------------
    def _weight_mask(self) -> torch.Tensor:
        if self.weight_mask is None:
            self.weight_mask = (self.module.weight.detach() != 0).float()
        return self.weight_mask

    def observe(self, x: torch.Tensor) -> None:
        """Reduce one batch of layer input ``x`` into the running sums."""
        x = x.detach()
        if self.is_conv:
            if x.dim() == 3:  # unbatched conv input [C, H, W]
                x = x.unsqueeze(0)
            # 0/1 in fp32: sums of up to 2**24 ones are exact, and matmuls/sums are fast
            effectual, nonzeros, tiles = self._observe_conv(self.scratch.nonzero_mask(x))
        else:
            x = x.reshape(-1, x.shape[-1])  # rows are samples/tokens
            effectual, nonzeros, tiles = self._observe_linear(self.scratch.nonzero_mask(x))
        self.calls += 1
        self.effectual_macs = self.effectual_macs + effectual
        self.input_count += x.numel()
        self.input_nonzeros = self.input_nonzeros + nonzeros
        self.tiles.append(tiles)
        if self.input_min is None:  # the sign of the input range is a property of the layer
            self.input_min = x.min()

    def _observe_conv(
        self, x_nonzero: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(effectual MACs, input nonzeros, per-tile counts) of one batch's 0/1 input mask."""
        conv: nn.Conv2d = self.module  # type: ignore[assignment]
        n, c_total, h, w = x_nonzero.shape
        k, c_per_group, r, s = self._weight_mask().shape
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
        tiles = self._tile_counts(x_nonzero)
        # Effectual MACs = sum over (c, r, s) of [nonzero weights at (c, r, s) over the output
        # channels that read c] x [nonzero inputs that tap (c, r, s) meets over all outputs
        # (n, p, q)]: C*R*S*P*Q work on the batch-summed nonzero map instead of the layer's
        # K*C*R*S*P*Q. Zero padding contributes nothing; all sums are exact integers.
        if (r, s, stride, pad) == (1, 1, (1, 1), (0, 0)):
            # 1x1, stride 1: every input pixel meets its tap once, so the tiles already hold
            # the second factor (no second pass over the mask)
            taps = tiles.sum((0, 2, 3), dtype=torch.float64).view(c_total, 1, 1)
            nonzeros = taps.sum()
        else:
            batch_sum = x_nonzero.sum(0)  # exact: at most n ones per pixel
            nonzeros = batch_sum.sum(dtype=torch.float64)
            per_channel = F.pad(batch_sum, (pad[1], pad[1], pad[0], pad[0]))
            sc, sh, sw = per_channel.stride()
            # windows[c, i, j, a, b] = per_channel[c, i*dil + a*stride, j*dil + b*stride]
            windows = per_channel.as_strided(
                (c_total, r, s, p, q),
                (sc, dil[0] * sh, dil[1] * sw, stride[0] * sh, stride[1] * sw),
            )
            # each window sum is at most n*p*q: exact in fp32 below 2**24, else add in fp64
            exact = torch.float32 if n * p * q < EXACT_FP32 else torch.float64
            taps = windows.sum((3, 4), dtype=exact)
        return (taps * self._weights_per_tap()).sum(), nonzeros, tiles

    def _weights_per_tap(self) -> torch.Tensor:
        """[C_total, R, S] fp64: nonzero weights at each (input channel, tap) over the output
        channels that read that input channel (per group)."""
        if self.weights_per_tap is None:
            w_mask = self._weight_mask()
            k, c_per_group, r, s = w_mask.shape
            groups = int(self.module.groups)  # type: ignore[arg-type]
            per_group = w_mask.view(groups, k // groups, c_per_group, r, s).sum(1)
            self.weights_per_tap = per_group.reshape(groups * c_per_group, r, s).double()
        return self.weights_per_tap

    def _observe_linear(
        self, x_nonzero: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(effectual MACs, input nonzeros, per-tile counts) of one batch's [rows, features]
        0/1 input mask."""
        w_mask = self._weight_mask()
        rows, features = x_nonzero.shape
        # sum_n sum_k sum_c x[n,c] w[k,c] = sum_c (sum_n x[n,c]) * (sum_k w[k,c]), exact in fp64
        per_feature_inputs = x_nonzero.sum(0, dtype=torch.float64)
        per_feature_weights = w_mask.sum(0, dtype=torch.float64)
        self._check_geometry((features, 1, 1, 1, 1, 0, 0))
        self.n += rows
        self.dense_macs += rows * w_mask.shape[0] * features
        tiles = self._tile_counts(x_nonzero.view(rows, features, 1, 1))
        effectual = (per_feature_inputs * per_feature_weights).sum()
        return effectual, per_feature_inputs.sum(), tiles

    def _check_geometry(self, geometry: tuple[int, ...]) -> None:
        if self.geometry is None:
            self.geometry = geometry
        elif self.geometry != geometry:
            raise HardwareError(
                f"layer {self.name} saw inputs of different shapes across batches "
                f"({self.geometry[:3]} then {geometry[:3]}): capture with one input size"
            )

    def _tile_counts(self, x_nonzero: torch.Tensor) -> torch.Tensor:
        """Nonzeros per planar tile: [N, C, tile_rows, tile_cols] (SCNN's PT partition), fp32.

        Each tile row of one (image, channel) is a row of ``blocks`` [N*C*used_rows,
        tile_h*W]; a 0/1 indicator [tile_h*W, tile_cols] of each pixel's tile column sums it.
        Tall tiles first sum their rows (a reduction vectorised along W), so the matmul reads
        1/tile_h of the mask; short ones go straight to one matmul, with the mask as the long
        operand. Pixel-sized tiles are the mask itself. Empty last tiles stay 0; a partial
        last tile row is padded. The sums are exact small integers in fp32.
        """
        n, c, h, w = x_nonzero.shape
        rows, cols = self.tile_grid
        tile_h, tile_w = math.ceil(h / rows), math.ceil(w / cols)
        used_rows = math.ceil(h / tile_h)  # the last tile rows are empty when h < rows*tile_h
        if tile_h == 1 and tile_w == 1:  # a copy either way: the mask's buffer is reused
            fits = (h, w) == (rows, cols)
            return x_nonzero.clone() if fits else F.pad(x_nonzero, (0, cols - w, 0, rows - h))
        if used_rows * tile_h != h:
            x_nonzero = F.pad(x_nonzero, (0, 0, 0, used_rows * tile_h - h))
        if self.col_indicator is None:
            self.col_indicator = _tile_indicator(w, cols, x_nonzero.device)
        if tile_h >= ROW_SUM_FIRST_FROM:
            per_row_tile = x_nonzero.view(n * c * used_rows, tile_h, w).sum(1)
            counts = per_row_tile @ self.col_indicator
        else:
            blocks = x_nonzero.view(n * c * used_rows, tile_h * w)
            block_indicator = self.col_indicator.repeat(tile_h, 1)  # [tile_h * W, cols]
            counts = torch.mm(block_indicator.t(), blocks.t()).t()
        counts = counts.reshape(n, c, used_rows, cols)
        if used_rows < rows:
            counts = F.pad(counts, (0, 0, 0, rows - used_rows))
        return counts

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
        if self.tiles_array is None:
            # one host copy as int32, converted while concatenating; the pieces are dropped
            pieces = [piece.cpu().numpy() for piece in self.tiles]
            self.tiles_array = np.concatenate(pieces, dtype=np.int32, casting="unsafe")
            self.tiles_array.setflags(write=False)  # read-only like every record array
            self.tiles = []
        tiles = self.tiles_array
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
            input_nonzeros=int(self.input_nonzeros),
            effectual_macs=int(self.effectual_macs),
            input_nonzeros_per_tile=tiles,
            weight_nonzeros_per_kc=frozen_array(per_kc),
            nm_compliant=is_2of4_compliant(w_mask),
            input_signed=bool(self.input_min is not None and self.input_min < 0),
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
    scratch = _MaskScratch()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in model.named_modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            layer = _LayerStats(name, module, (int(tile_grid[0]), int(tile_grid[1])), scratch)
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
