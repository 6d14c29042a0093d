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


# Tile sides up to this many pixels are summed as that many strided slices (one vectorised
# add each, along the whole row); longer sides reduce in one pass.
ADD_SLICES_UP_TO = 8


class TileCounter:
    """Nonzeros per planar tile of a fixed (tile_rows, tile_cols) grid (SCNN's PT partition)."""

    def __init__(self, grid: tuple[int, int], scratch: Scratch) -> None:
        self.grid = grid
        self.scratch = scratch

    def __call__(self, x_nonzero: torch.Tensor) -> torch.Tensor:
        """Counts [N, C, used_rows, used_cols] fp32 of a 0/1 mask [N, C, H, W]: the tiles
        that hold pixels (:class:`TileStore` adds the grid's empty last rows and columns).
        The result lives in scratch memory (or is the mask itself): valid until the next
        mask is made.

        Two separable sums: each tile row's ``tile_h`` pixel rows first ([N*C*used_rows, W],
        vectorised along W), then each tile's ``tile_w`` columns of that. A partial last
        tile row or column is padded with zeros. Sums of 0/1 in fp32 are exact integers.
        """
        n, c, h, w = x_nonzero.shape
        rows, cols = self.grid
        tile_h, tile_w = math.ceil(h / rows), math.ceil(w / cols)
        used_rows, used_cols = math.ceil(h / tile_h), math.ceil(w / tile_w)
        if tile_h == 1 and tile_w == 1:
            return x_nonzero
        if used_rows * tile_h != h:
            x_nonzero = F.pad(x_nonzero, (0, 0, 0, used_rows * tile_h - h))
        tile_rows, width, device = n * c * used_rows, used_cols * tile_w, x_nonzero.device
        blocks = x_nonzero.view(tile_rows, tile_h, w)
        row_sums = self.scratch.buffer("row_sums", (tile_rows, width), device)
        if width != w:
            row_sums[:, w:] = 0
        _sum_slices(blocks, 1, row_sums[:, :w])
        if tile_w == 1:
            return row_sums.view(n, c, used_rows, used_cols)
        counts = self.scratch.buffer("tiles", (tile_rows, used_cols), device)
        _sum_slices(row_sums.view(tile_rows, used_cols, tile_w), 2, counts)
        return counts.view(n, c, used_rows, used_cols)


def _sum_slices(x: torch.Tensor, dim: int, out: torch.Tensor) -> None:
    """``out`` = ``x`` summed over ``dim`` (``out`` may be a strided view): short dims as
    adds of their slices, long ones as one reduction."""
    size = x.shape[dim]
    if size == 1:
        out.copy_(x.select(dim, 0))
    elif size <= ADD_SLICES_UP_TO:
        torch.add(x.select(dim, 0), x.select(dim, 1), out=out)
        for index in range(2, size):
            out.add_(x.select(dim, index))
    else:
        torch.sum(x, dim, out=out)


def tile_count_dtype(pixels_per_tile: int) -> np.dtype:
    """The narrowest integer type that holds every count of a tile of that many pixels:
    int16 up to 32,767 pixels (a 224x224 input on an 8x8 grid has 784), else int32."""
    return np.dtype(np.int16 if pixels_per_tile <= np.iinfo(np.int16).max else np.int32)


class TileStore:
    """The per-tile counts of every image, in order, as the record's [N, C, rows, cols]
    integers of :func:`tile_count_dtype`.

    On the CPU each slice's counts go straight into one growing host buffer of the record's
    type (converted as they are copied; its spare capacity is address space, never
    touched): the largest thing a capture keeps is written once, in its final form, and
    never copied again. On other devices the pieces stay on the device (no host
    synchronisation per batch) and are copied over once at the end. Empty tiles (the grid's
    last rows/columns) are 0.
    """

    def __init__(
        self, grid: tuple[int, int], channels: int, on_host: bool, pixels_per_tile: int
    ) -> None:
        self.grid = grid
        self.channels = channels
        self.on_host = on_host  # the counts are made on the CPU: write them in place
        self.dtype = tile_count_dtype(pixels_per_tile)
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
        rows[:, :, :used_rows, :used_cols] = counts  # exact: small integers
        rows[:, :, used_rows:, :] = 0
        rows[:, :, :used_rows, used_cols:] = 0
        self.count += n

    def _reserve(self, images: int) -> None:
        capacity = 0 if self._buffer is None else self._buffer.shape[0]
        if images <= capacity:
            return
        # room for several more batches like the first; doubling after that
        per_image_bytes = self.dtype.itemsize * self.channels * math.prod(self.grid)
        capacity = max(images * SPARE_BATCHES, 2 * capacity, -(-MMAP_BYTES // per_image_bytes))
        # At least MMAP_BYTES, so the C allocator maps it on its own instead of carving it
        # out of its heap, where a long-lived block would keep the forward pass from reusing
        # its freed temporaries (the forward then page-faults afresh every batch); untouched
        # spare capacity is address space only. torch's allocator, not numpy's: numpy asks
        # for transparent huge pages here, whose first fill can stall in memory compaction.
        shape = (capacity, self.channels, *self.grid)
        grown = torch.empty(shape, dtype=getattr(torch, self.dtype.name)).numpy()
        if self._buffer is not None:
            grown[: self.count] = self._buffer[: self.count]
        self._buffer = grown

    def array(self) -> np.ndarray:
        """The counts as read-only [N, C, rows, cols] on the host (made once)."""
        if self._array is None:
            if self._pieces:
                self._array = self._from_pieces()
            elif self._buffer is None:
                self._array = np.zeros((0, self.channels, *self.grid), dtype=self.dtype)
            else:
                self._array = self._buffer[: self.count]
            self._array.setflags(write=False)
        return self._array

    def _from_pieces(self) -> np.ndarray:
        counts = np.empty((self.count, self.channels, *self.grid), dtype=self.dtype)
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
