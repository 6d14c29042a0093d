"""The reductions capture applies to each layer input: 0/1 nonzero masks, per-tile counts and
the per-tap counts of nonzero inputs behind the effectual MACs.

Everything here is exact integer arithmetic carried in floating point (fp32 sums of 0/1 stay
exact below 2**24, fp64 below 2**53), so it runs on any device with its fast float kernels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

EXACT_FP32 = 2**24  # integers below this add exactly in fp32
ROW_SUM_FIRST_FROM = 6  # tile height from which summing tile rows first beats one matmul
# Integers up to 256 are exact in bf16 (8-bit significand), so matmuls on them stay exact
# even where fp32 matmuls are allowed reduced-precision operands (TF32/bf16 accumulate in fp32).
EXACT_ANY_PRECISION = 256
# Images per slice on the CPU: the slice's mask (4 bytes per element) and its reductions stay
# in cache, so the hooks do not evict the activations the next layers read.
CPU_SLICE_ELEMENTS = 1 << 20
SPARE_BATCHES = 8  # host room reserved for the per-tile counts, in first batches
MMAP_BYTES = 64 << 20  # above glibc's largest mmap threshold (32 MiB on 64-bit)


class Scratch:
    """Reusable buffers, one per (name, device), for everything the hooks compute and drop.

    Hooks run one at a time, so each layer's 0/1 mask and its reductions can live in the
    same memory: the hooks allocate nothing per call. Fresh allocations would cost more
    than the arithmetic: an activation-sized one is page-faulted in every time, and many
    medium ones interleaved with the forward pass's own keep the allocator from reusing its
    memory, so the forward itself starts faulting.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def buffer(
        self,
        name: str,
        shape: tuple[int, ...],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape``, valid until the next request of
        ``name``."""
        key, numel = (name, device, dtype), math.prod(shape)
        flat = self._buffers.get(key)
        if flat is None or flat.numel() < numel:
            flat = torch.empty(max(numel, 1), dtype=dtype, device=device)
            self._buffers[key] = flat
        return flat[:numel].view(shape)

    @staticmethod
    def slices(x: torch.Tensor) -> Iterator[torch.Tensor]:
        """``x`` [N, ...] in slices of whole images: on the CPU as many as fit
        ``CPU_SLICE_ELEMENTS`` (at least one), elsewhere all of them at once."""
        if x.device.type != "cpu" or len(x) == 0:
            yield x
            return
        step = max(1, CPU_SLICE_ELEMENTS // max(1, x[0].numel()))
        for start in range(0, x.shape[0], step):
            yield x[start : start + step]

    def nonzero_mask(self, x: torch.Tensor) -> torch.Tensor:
        """(x != 0) as 0/1 fp32 of ``x``'s shape, valid until the next call."""
        return torch.ne(x, 0, out=self.buffer("mask", tuple(x.shape), x.device))


def tile_indicator(size: int, tiles: int, device: torch.device) -> torch.Tensor:
    """[size, tiles] 0/1: pixel i belongs to tile i // ceil(size / tiles) (the last tiles may
    be partial or empty), so ``rows @ indicator`` sums each tile."""
    tile = math.ceil(size / tiles)
    indicator = torch.zeros(size, tiles, dtype=torch.float32, device=device)
    pixels = torch.arange(size, device=device)
    indicator[pixels, pixels // tile] = 1.0
    return indicator


class TileCounter:
    """Nonzeros per planar tile of a fixed (tile_rows, tile_cols) grid (SCNN's PT partition)."""

    def __init__(self, grid: tuple[int, int], scratch: Scratch) -> None:
        self.grid = grid
        self.scratch = scratch
        self._indicator: torch.Tensor | None = None  # [tile_h * W, used_cols], made once

    def __call__(self, x_nonzero: torch.Tensor) -> torch.Tensor:
        """Counts [N, C, used_rows, used_cols] fp32 of a 0/1 mask [N, C, H, W] (H, W fixed):
        the tiles that hold pixels (:class:`TileStore` adds the grid's empty last rows and
        columns). The result lives in scratch memory (or is the mask itself): valid until
        the next mask is made.

        Each tile row of one (image, channel) is a row of ``blocks`` [N*C*used_rows,
        tile_h*W]; a 0/1 indicator [tile_h*W, used_cols] of each pixel's tile column sums it.
        Tall tiles first sum their rows (a reduction vectorised along W), so the matmul reads
        1/tile_h of the mask; short ones go straight to one matmul, with the mask as the long
        operand (its result is kept transposed, a view). Pixel-sized tiles are the mask
        itself. A partial last tile row is padded. Every matmul operand is an integer of at
        most 256, so the counts are exact whatever matmul precision is allowed.
        """
        n, c, h, w = x_nonzero.shape
        rows, cols = self.grid
        tile_h, tile_w = math.ceil(h / rows), math.ceil(w / cols)
        used_rows, used_cols = math.ceil(h / tile_h), math.ceil(w / tile_w)
        if tile_h == 1 and tile_w == 1:
            return x_nonzero
        if used_rows * tile_h != h:
            x_nonzero = F.pad(x_nonzero, (0, 0, 0, used_rows * tile_h - h))
        rows_first = ROW_SUM_FIRST_FROM <= tile_h <= EXACT_ANY_PRECISION
        device, tile_rows = x_nonzero.device, n * c * used_rows
        if self._indicator is None:
            columns = tile_indicator(w, cols, device)[:, :used_cols]
            self._indicator = columns.contiguous() if rows_first else columns.repeat(tile_h, 1)
        if rows_first:
            per_row_tile = self.scratch.buffer("row_sums", (tile_rows, w), device)
            torch.sum(x_nonzero.view(tile_rows, tile_h, w), 1, out=per_row_tile)
            counts = self.scratch.buffer("tiles", (tile_rows, used_cols), device)
            torch.mm(per_row_tile, self._indicator, out=counts)
        else:
            blocks = x_nonzero.view(tile_rows, tile_h * w)
            counts = self.scratch.buffer("tiles", (used_cols, tile_rows), device)
            counts = torch.mm(self._indicator.t(), blocks.t(), out=counts).t()
        return counts.view(n, c, used_rows, used_cols)


class TileStore:
    """The per-tile counts of every image, in order, as the record's [N, C, rows, cols] int32.

    On the CPU each slice's counts go straight into one growing host buffer (fp32, written in
    place; its spare capacity is address space, never touched), converted in place to int32
    at the end: the largest thing a capture keeps is written once and never copied. On other
    devices the pieces stay on the device (no host synchronisation per batch) and are copied
    over once at the end. Empty tiles (the grid's last rows/columns) are 0.
    """

    def __init__(self, grid: tuple[int, int], channels: int, on_host: bool) -> None:
        self.grid = grid
        self.channels = channels
        self.on_host = on_host  # the counts are made on the CPU: write them in place
        self.count = 0
        self._buffer: np.ndarray | None = None
        self._pieces: list[torch.Tensor] = []
        self._array: np.ndarray | None = None

    def add(self, counts: torch.Tensor) -> None:
        """Append (copy) the counts [n, C, used_rows, used_cols] of the next n images."""
        if not self.on_host:  # a copy: the counts live in scratch memory
            self._pieces.append(counts.clone())
            self.count += counts.shape[0]
            return
        n, _c, used_rows, used_cols = counts.shape
        self._reserve(self.count + n)
        assert self._buffer is not None
        rows = torch.from_numpy(self._buffer[self.count : self.count + n])
        rows[:, :, :used_rows, :used_cols] = counts
        rows[:, :, used_rows:, :] = 0
        rows[:, :, :used_rows, used_cols:] = 0
        self.count += n

    def _reserve(self, images: int) -> None:
        capacity = 0 if self._buffer is None else self._buffer.shape[0]
        if images <= capacity:
            return
        # room for several more batches like the first; doubling after that
        per_image_bytes = 4 * self.channels * math.prod(self.grid)
        capacity = max(images * SPARE_BATCHES, 2 * capacity, -(-MMAP_BYTES // per_image_bytes))
        # At least MMAP_BYTES, so the C allocator maps it on its own instead of carving it
        # out of its heap, where a long-lived block would keep the forward pass from reusing
        # its freed temporaries (the forward then page-faults afresh every batch); untouched
        # spare capacity is address space only. torch's allocator, not numpy's: numpy asks
        # for transparent huge pages here, whose first fill can stall in memory compaction.
        grown = torch.empty((capacity, self.channels, *self.grid)).numpy()
        if self._buffer is not None:
            grown[: self.count] = self._buffer[: self.count]
        self._buffer = grown

    def array(self) -> np.ndarray:
        """The counts as read-only int32 [N, C, rows, cols] on the host (made once)."""
        if self._array is None:
            if self._pieces:
                self._array = self._from_pieces()
            elif self._buffer is None:
                self._array = np.zeros((0, self.channels, *self.grid), dtype=np.int32)
            else:
                counts = self._buffer[: self.count]
                self._array = counts.view(np.int32)
                # in place, a few images at a time (a whole-array cast would need a temporary
                # as large as the array): the fp32 values are exact integers
                for start in range(0, self.count, 16):
                    self._array[start : start + 16] = counts[start : start + 16].astype(np.int32)
            self._array.setflags(write=False)
        return self._array

    def _from_pieces(self) -> np.ndarray:
        counts = np.empty((self.count, self.channels, *self.grid), dtype=np.int32)
        start = 0
        for piece in self._pieces:
            part = piece.cpu().numpy()
            n, _c, used_rows, used_cols = part.shape
            counts[start : start + n] = 0
            counts[start : start + n, :, :used_rows, :used_cols] = part
            start += n
        self._pieces = []
        return counts


def tap_counts(
    pixel_sums: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    output: tuple[int, int],
    images: int,
) -> torch.Tensor:
    """[C, R, S] fp64: nonzero inputs that kernel tap (r, s) of channel c meets over every
    output position of every image.

    ``pixel_sums`` [C, H, W]: nonzeros per input pixel summed over the ``images``. The count
    for tap (r, s) is a strided window sum of the zero-padded map (one strided view, one
    reduction): C*R*S*P*Q work instead of the layer's K*C*R*S*P*Q. Each window sum is at most
    images*P*Q, exact in fp32 below 2**24 (else it adds in fp64).
    """
    c = pixel_sums.shape[0]
    (r, s), (p, q) = kernel, output
    padded = F.pad(pixel_sums, (padding[1], padding[1], padding[0], padding[0]))
    sc, sh, sw = padded.stride()
    # windows[c, i, j, a, b] = padded[c, i*dil + a*stride, j*dil + b*stride]
    windows = padded.as_strided(
        (c, r, s, p, q),
        (sc, dilation[0] * sh, dilation[1] * sw, stride[0] * sh, stride[1] * sw),
    )
    exact = torch.float32 if images * p * q < EXACT_FP32 else torch.float64
    return windows.sum((3, 4), dtype=exact).double()


def exact_fp32_matmul() -> bool:
    """True when CPU fp32 matmuls keep full fp32 operands (no TF32/bf16 shortcut allowed)."""
    try:
        legacy = torch.get_float32_matmul_precision()
    except RuntimeError:  # legacy and per-backend settings mixed: do not assume
        return False
    overall = getattr(torch.backends, "fp32_precision", "none")
    mkldnn = getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", "none")
    return legacy == "highest" and overall in ("none", "ieee") and mkldnn in ("none", "ieee")
