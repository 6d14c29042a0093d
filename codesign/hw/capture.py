"""Observe the real tensors of every Conv2d/Linear and reduce them to ``LayerRecord``s.

This is the project's only forward-hook site. Each hook reduces the layer's input right away
(nonzeros per input pixel or channel, per-tile nonzeros for SCNN's PE grid; the exact
effectual MACs follow from those sums) and drops the tensor: what is kept grows only by the
per-tile counts, C x tile_rows x tile_cols int16 per image and layer (SCNN's per-image
barriers need them; ResNet-50 at 8x8 tiles: 3.1 MB per image), never by activations. The
reductions run on the layer's device with no host synchronisation per batch; the record moves
them to the host once, at the end.

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
from torch import nn

from codesign.errors import HardwareError
from codesign.hw.nonzeros import EXACT_FP32, Scratch, TileCounter, TileStore, tap_counts
from codesign.hw.records import LayerRecord, frozen_array

FLOAT_BITS = 32  # a layer without ``weight_bits``/``input_bits`` computes in fp32
ONE_TAP = ((1, 1), (1, 1), (0, 0))  # (kernel, stride, padding) where each pixel meets one tap


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _LayerStats:
    """Running reductions for one layer across every batch the forward loop feeds it.

    Everything stays on the layer's device until :meth:`record`, with no host
    synchronisation per batch: the per-tile counts [n, C, tile_rows, tile_cols] (fp32, one
    tensor per slice of images: the only state that grows with the number of images) and a
    running sum of nonzeros per input pixel [C, H, W] (convs whose taps see windows) or per
    input channel [C] (1x1 stride-1 convs and linear layers, read off the tile counts).
    Effectual MACs follow from those sums once, at the end: they are linear in them.
    """

    def __init__(
        self, name: str, module: nn.Module, tile_grid: tuple[int, int], scratch: Scratch
    ) -> None:
        self.name = name
        self.module = module
        self.scratch = scratch
        self.tile_grid = tile_grid
        self.count_tiles = TileCounter(tile_grid, scratch)
        self.is_conv = isinstance(module, nn.Conv2d)
        self.n = 0
        self.dense_macs = 0
        self.input_count = 0
        self.input_min: torch.Tensor | None = None
        self.tiles: TileStore | None = None  # made with the layer's geometry
        self.pixel_sums: torch.Tensor | None = None  # fp32: exact while n < 2**24
        self.channel_sums: torch.Tensor | None = None  # fp64
        self.geometry: tuple[int, ...] | None = None  # (c_total, h, w, p, q, pad_h, pad_w)
        self.weight_shape: tuple[int, ...] | None = None

    # -- weights: they do not change during an eval-mode capture; a parametrized weight is
    # recomputed on every access, so its shape is read once and its mask made at the end ----
    def _weight_shape(self) -> tuple[int, ...]:
        if self.weight_shape is None:
            self.weight_shape = tuple(self.module.weight.shape)
        return self.weight_shape

    def _weight_mask(self) -> torch.Tensor:
        """0/1 fp32 of the layer's weight (made when needed, not kept: all weights' masks
        together are as large as the model)."""
        weight = self.module.weight.detach()
        mask = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
        return torch.ne(weight, 0, out=mask)  # 0/1 written as fp32 directly

    def _conv_params(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(kernel, stride, dilation) of the conv; all (1, 1) for a linear layer."""
        if not self.is_conv:
            return (1, 1), (1, 1), (1, 1)
        conv: nn.Conv2d = self.module  # type: ignore[assignment]
        kernel = _pair(self._weight_shape()[2:])
        return kernel, _pair(conv.stride), _pair(conv.dilation)

    def observe(self, x: torch.Tensor) -> None:
        """Reduce one batch of layer input ``x`` into the running sums."""
        x = x.detach()
        if self.is_conv:
            x = x.unsqueeze(0) if x.dim() == 3 else x  # unbatched conv input [C, H, W]
            self._count_conv(x.shape, x.device)
        else:
            features = x.shape[-1]
            x = x.reshape(-1, features, 1, 1)  # rows: samples/tokens; a 1x1 conv on 1 pixel
            self._check_geometry((features, 1, 1, 1, 1, 0, 0), x.device)
            self.n += x.shape[0]
            self.dense_macs += x.shape[0] * self._weight_shape()[0] * features
        if self.n >= EXACT_FP32:
            raise HardwareError(
                f"layer {self.name}: capture fewer than {EXACT_FP32} images (the per-pixel "
                "counts are exact below that)"
            )
        self.input_count += x.numel()
        first = self.input_min is None
        for part in self.scratch.slices(x):
            x_nonzero = self.scratch.nonzero_mask(part)  # 0/1 fp32
            tiles = self.count_tiles(x_nonzero)
            assert self.tiles is not None
            self.tiles.add(tiles)
            if self.channel_sums is not None:
                # per (image, channel) in fp32 (exact: at most H*W), then over images in fp64
                per_image = self.scratch.buffer("per_image", tiles.shape[:2], tiles.device)
                torch.sum(tiles, (2, 3), out=per_image)
                self.channel_sums += per_image.sum(0, dtype=torch.float64)
            elif self.pixel_sums is not None and len(x_nonzero) == 1:
                self.pixel_sums += x_nonzero[0]
            elif self.pixel_sums is not None:
                batch_sum = self.scratch.buffer("batch_sum", self.pixel_sums.shape, part.device)
                self.pixel_sums += torch.sum(x_nonzero, 0, out=batch_sum)
            if first and part.numel():  # the sign of the input range is the layer's
                low = part.amin()
                self.input_min = low if self.input_min is None else self.input_min.minimum(low)

    def _count_conv(self, shape: torch.Size, device: torch.device) -> None:
        n, c_total, h, w = shape
        k, c_per_group, r, s = self._weight_shape()
        (r, s), stride, dil = self._conv_params()
        padding = self.module.padding
        if isinstance(padding, str):  # "valid" or "same" (symmetric for odd kernels)
            same = padding == "same"
            pad = (dil[0] * (r - 1) // 2, dil[1] * (s - 1) // 2) if same else (0, 0)
        else:
            pad = _pair(padding)  # type: ignore[arg-type]
        p = (h + 2 * pad[0] - dil[0] * (r - 1) - 1) // stride[0] + 1
        q = (w + 2 * pad[1] - dil[1] * (s - 1) - 1) // stride[1] + 1
        self._check_geometry((c_total, h, w, p, q, pad[0], pad[1]), device)
        self.n += n
        self.dense_macs += n * k * c_per_group * p * q * r * s

    def _check_geometry(self, geometry: tuple[int, ...], device: torch.device) -> None:
        if self.geometry is not None:
            if self.geometry != geometry:
                raise HardwareError(
                    f"layer {self.name} saw inputs of different shapes across batches "
                    f"({self.geometry[:3]} then {geometry[:3]}): capture with one input size"
                )
            return
        self.geometry = geometry
        c_total, h, w, _p, _q, pad_h, pad_w = geometry
        kernel, stride, _dilation = self._conv_params()
        rows, cols = self.tile_grid
        tile_pixels = math.ceil(h / rows) * math.ceil(w / cols)
        self.tiles = TileStore(self.tile_grid, c_total, device.type == "cpu", tile_pixels)
        if (kernel, stride, (pad_h, pad_w)) == ONE_TAP:
            # every input pixel meets its one tap once: per-channel totals suffice
            self.channel_sums = torch.zeros(c_total, dtype=torch.float64, device=device)
        else:
            self.pixel_sums = torch.zeros(c_total, h, w, device=device)

    def _weights_per_tap(self, w_mask: torch.Tensor) -> torch.Tensor:
        """[C_total, R, S] fp64: nonzero weights at each (input channel, tap) over the output
        channels that read that input channel (per group), from the 0/1 weight mask."""
        if not self.is_conv:
            return w_mask.sum(0, dtype=torch.float64).view(-1, 1, 1)
        k, c_per_group, r, s = w_mask.shape
        groups = int(self.module.groups)  # type: ignore[arg-type]
        per_group = w_mask.view(groups, k // groups, c_per_group, r, s).sum(1)
        return per_group.reshape(groups * c_per_group, r, s).double()

    def _effectual_and_nonzeros(self, w_mask: torch.Tensor) -> tuple[int, int]:
        """Effectual MACs = sum over (c, r, s) of [nonzero weights at (c, r, s) over the output
        channels that read c] x [nonzero inputs that tap (c, r, s) meets over all outputs
        (n, p, q)]; zero padding contributes nothing. All sums are exact integers."""
        assert self.geometry is not None
        if self.pixel_sums is not None:
            _c, _h, _w, p, q, pad_h, pad_w = self.geometry
            kernel, stride, dilation = self._conv_params()
            taps = tap_counts(
                self.pixel_sums, kernel, stride, dilation, (pad_h, pad_w), (p, q), self.n
            )
            nonzeros = self.pixel_sums.sum(dtype=torch.float64)
        else:
            assert self.channel_sums is not None
            taps, nonzeros = self.channel_sums.view(-1, 1, 1), self.channel_sums.sum()
        return int((taps * self._weights_per_tap(w_mask)).sum()), int(nonzeros)

    def record(self) -> LayerRecord:
        if self.geometry is None:
            raise HardwareError(
                f"layer {self.name} never ran: the forward_loop must feed at least one batch "
                "through the model (or remove the layer from the model)"
            )
        _c_total, h, w, p, q, pad_h, pad_w = self.geometry
        assert self.tiles is not None  # made with the geometry
        w_mask = self._weight_mask()
        if self.is_conv:
            k, c, r, s = w_mask.shape
            groups, op = int(self.module.groups), "conv"  # type: ignore[arg-type]
        else:
            (k, c), r, s, groups, op = w_mask.shape, 1, 1, 1, "linear"
        per_kc = w_mask.view(k, c, r * s).sum(-1).cpu().numpy().astype(np.int64)
        effectual, nonzeros = self._effectual_and_nonzeros(w_mask)
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
            stride=self._conv_params()[1],
            padding=(pad_h, pad_w),
            groups=groups,
            weight_bits=int(getattr(self.module, "weight_bits", FLOAT_BITS)),
            input_bits=int(getattr(self.module, "input_bits", FLOAT_BITS)),
            dense_macs=self.dense_macs,
            weight_count=int(w_mask.numel()),
            weight_nonzeros=int(w_mask.sum().item()),
            input_count=self.input_count,
            input_nonzeros=nonzeros,
            effectual_macs=effectual,
            input_nonzeros_per_tile=self.tiles.array(),  # read-only like every record array
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
    scratch = Scratch()
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
