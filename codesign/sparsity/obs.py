"""One-shot pruning that also repairs the weights it keeps: SparseGPT (Frantar & Alistarh 2023).

Magnitude pruning drops the smallest weights and leaves the rest unchanged. For a layer with
calibration inputs X (im2col rows, [P, D]) and H = X^T X / P, the Optimal Brain Surgeon step
(Hassibi & Stork 1993) instead removes weight j of a row at the cost w_j^2 / [H^-1]_jj in
squared output error and moves the row's other weights by -w_j [H^-1]_j: / [H^-1]_jj to cancel
as much of that error as the inputs allow. SparseGPT makes this affordable by visiting the
columns left to right with the upper Cholesky factor of H^-1 (each column's error is only
pushed onto later columns), choosing the masks by that cost per block of columns
(unstructured) or per group of M columns (N:M).

For convolutions the columns are reordered to (R, S, C) first, so an N:M group (M consecutive
input channels at one kernel position, the layout of ``nm_mask``) is M adjacent columns.
Layers are pruned in forward order, each on the inputs the already pruned layers before it
produce (as SparseGPT does), so later layers also absorb the earlier ones' error; the
calibration batches pass through the network once for all layers (``codesign.quant.sequential``).

The column loop is sequential by construction (each decision depends on the updates of the
columns before it); every step is a vectorised operation over all K rows.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from codesign import distributed
from codesign.config import SparsitySpec
from codesign.data.loops import ForwardLoop
from codesign.errors import CodesignError, SparsityError
from codesign.quant.im2col import im2col
from codesign.quant.sequential import LayerTimer, layer_inputs, record_batches
from codesign.sparsity.masks import NMPattern, Unstructured, magnitude_mask, nm_mask
from codesign.sparsity.prune import WeightMask, plan_pruning

BLOCK_COLUMNS = 128  # SparseGPT's block: masks of unstructured levels are chosen per block
DAMPING = 0.01  # fraction of mean(diag H) added to the diagonal (SparseGPT's default)


def channel_last_order(layer: nn.Module) -> torch.Tensor:
    """Column order [D] that turns im2col's (C, R, S) columns into (R, S, C)."""
    device = layer.weight.device
    if not isinstance(layer, nn.Conv2d):
        return torch.arange(layer.weight.shape[1], device=device)
    channels, positions = layer.weight.shape[1], math.prod(layer.weight.shape[2:])
    order = torch.arange(channels * positions, device=device)
    return order.view(channels, positions).t().reshape(-1)


def input_hessian(
    layer: nn.Module, inputs: list[torch.Tensor], product_dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """H = X^T X / P [D, D] (float64) over every im2col row of ``inputs``, columns (R, S, C).

    ``inputs``: the layer's input batches ([B, C, H, W] or [B, C]) on any one device; the
    Hessian is computed there. SparseGPT and GPTQ share it. ``product_dtype``: the precision
    of each batch's X^T X (batches are summed in float64): SparseGPT's float64, or float32
    as the GPTQ reference computes it (3x faster on a CPU, relative error about 1e-6).
    Under torch.distributed, ``inputs`` are this rank's shard: the sum X^T X and the row
    count are summed over the ranks, so every rank holds the Hessian of the whole set.
    """
    if not inputs:
        raise SparsityError("SparseGPT needs calibration inputs: the forward loop gave none")
    device = inputs[0].device
    size = layer.weight.shape[1] * math.prod(layer.weight.shape[2:])
    hessian = torch.zeros(size, size, dtype=torch.float64, device=device)
    rows = 0
    for batch in inputs:
        columns = im2col(layer, batch, channel_last=True).to(product_dtype)
        hessian += (columns.T @ columns).double()
        rows += columns.shape[0]
    distributed.all_reduce_(hessian)
    rows = distributed.sum_count(rows, device)
    if rows == 0:
        raise SparsityError("SparseGPT needs calibration inputs: the forward loop gave none")
    return hessian / rows


def output_error(weight: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor) -> float:
    """Squared output error of ``pruned`` against ``weight`` ([K, D]) on the inputs of
    ``hessian``, relative to the output energy: tr(dW H dW^T) / tr(W H W^T)."""
    delta = (weight - pruned).double()
    reference = weight.double()
    energy = float(((reference @ hessian) * reference).sum())
    return float(((delta @ hessian) * delta).sum()) / max(energy, 1e-30)


def inverse_hessian_factor(
    hessian: torch.Tensor,
    damping: float,
    solver: str = "SparseGPT",
    error: type[CodesignError] = SparsityError,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, dead): U [D, D] float64 the upper Cholesky factor of (H + lambda I)^-1, and dead [D]
        bool the inputs that were 0 on every calibration row (their H row/column is replaced by
        the identity's, so H stays invertible; solvers zero their weights).

        lambda = ``damping`` x mean(diag H) (SparseGPT's and GPTQ's 1 %). Row i of U is what the
        OBS update of column i pushes onto the columns after it: SparseGPT and GPTQ sweep the
        columns left to right with it. ``solver`` and ``error``: the caller's name and exception
    type for a Hessian that cannot be inverted.
    """
    h = hessian.detach().double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(damping * float(h.diagonal().mean()))
    try:
        return (
            torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True),
            dead,
        )
    except torch.linalg.LinAlgError as exc:
        raise error(
            f"{solver} could not invert the calibration Hessian ({exc}); raise the damping "
            f"(now {damping}) or give more calibration images"
        ) from None


# step(column, local, block, diagonal) -> the value column ``column`` takes ([K]); ``local``
# is its index in ``block`` [K, block columns], ``diagonal`` the block's diagonal of U.
ColumnStep = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor]
# on_block(start, end, block, diagonal): called before each block's columns are visited.
BlockStart = Callable[[int, int, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def column_sweep(
    work: torch.Tensor,
    h_inv: torch.Tensor,
    block_columns: int,
    step: ColumnStep,
    on_block: BlockStart | None = None,
) -> torch.Tensor:
    """The Optimal Brain Surgeon column sweep that SparseGPT and GPTQ share, in place on
    ``work`` [K, D] (float64) with ``h_inv`` [D, D], the upper Cholesky factor U of H^-1.

    Left to right, column i takes the value ``step`` gives it (pruned: 0; quantized: its grid
    point), and its error (w_i - value) / U_ii moves every later column of the row by
    -error * U_i: to cancel what the inputs allow. Updates beyond the current block of
    ``block_columns`` are applied once per block as one matmul (the papers' lazy batching).
    Returns the errors [K, D]; ``work`` ends holding the chosen values.
    """
    columns = work.shape[1]
    all_errors = torch.zeros_like(work)
    for start in range(0, columns, block_columns):
        end = min(start + block_columns, columns)
        block = work[:, start:end].clone()
        errors = torch.zeros_like(block)
        h_block = h_inv[start:end, start:end]
        diagonal = h_block.diagonal()
        if on_block is not None:
            on_block(start, end, block, diagonal)
        for i in range(end - start):
            column = block[:, i]
            error = (column - step(start + i, i, block, diagonal)) / h_block[i, i]
            block[:, i:] -= error[:, None] * h_block[i, i:][None, :]
            errors[:, i] = error
        work[:, start:end] = block
        all_errors[:, start:end] = errors
        work[:, end:] -= errors @ h_inv[start:end, end:]
    return all_errors


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    pattern: NMPattern | Unstructured,
    damping: float = DAMPING,
    block_columns: int = BLOCK_COLUMNS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight`` [K, D] (columns in N:M group order) and update its kept weights.

    ``hessian`` [D, D]: X^T X / P of the layer's inputs. Returns (new weight [K, D] with the
    removed entries exactly 0, keep mask [K, D] bool). N:M: every M consecutive columns of a
    row keep N; unstructured: each block of columns removes its share of ``round(level * K*D)``
    weights, so the layer's count is exact.
    """
    rows, columns = weight.shape
    if not (torch.isfinite(hessian).all() and torch.isfinite(weight).all()):
        raise SparsityError(
            "SparseGPT got NaN/Inf in the layer's weights or calibration activations: check the "
            "checkpoint and the input data (or use method 'magnitude')"
        )
    work = weight.detach().double().clone()
    h_inv, dead = inverse_hessian_factor(hessian, damping)
    # Inputs that are 0 on every calibration image give their weights no error signal; like
    # SparseGPT, they are zeroed (removed first) rather than guessed at.
    work[:, dead] = 0.0
    removed = torch.zeros(rows, columns, dtype=torch.bool, device=work.device)
    if isinstance(pattern, NMPattern):
        if columns % pattern.m:
            raise SparsityError(
                f"{columns} columns do not split into groups of M={pattern.m} for {pattern}"
            )
        block_columns = pattern.m * max(1, block_columns // pattern.m)
    total_removed = 0
    if isinstance(pattern, Unstructured):
        total_removed = round(pattern.sparsity * rows * columns)

    def choose_block(start: int, end: int, block: torch.Tensor, diagonal: torch.Tensor) -> None:
        # Cumulative rounding: the blocks' counts add up to the layer's exact count.
        count = round(total_removed * end / columns) - round(total_removed * start / columns)
        if count:
            cost = (block**2 / diagonal**2).flatten()
            chosen = torch.zeros(cost.numel(), dtype=torch.bool, device=work.device)
            chosen[cost.topk(count, largest=False).indices] = True
            removed[:, start:end] = chosen.view(rows, end - start)

    def prune_column(
        index: int, local: int, block: torch.Tensor, diagonal: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(pattern, NMPattern) and local % pattern.m == 0:
            group = slice(local, local + pattern.m)
            cost = block[:, group] ** 2 / diagonal[group] ** 2
            drop = cost.topk(pattern.m - pattern.n, dim=1, largest=False).indices
            removed[:, index : index + pattern.m].scatter_(1, drop, True)
        return torch.where(removed[:, index], 0.0, block[:, local])

    on_block = choose_block if isinstance(pattern, Unstructured) else None
    column_sweep(work, h_inv, block_columns, prune_column, on_block)
    work[removed] = 0.0
    return work.to(weight.dtype), ~removed


@torch.no_grad()
def sparsegpt_prune_(
    model: nn.Module,
    spec: SparsitySpec,
    forward_loop: ForwardLoop,
    on_layer: LayerTimer | None = None,
) -> dict[str, dict[str, float]]:
    """Prune ``model`` in place like ``prune_(model, spec)``, choosing masks and repairing the
    kept weights with SparseGPT on the inputs ``forward_loop`` feeds (calibration images).

    Layer-wise levels and N:M only (a global or LAMP threshold ranks raw magnitudes across
    layers, which the per-layer OBS cost does not compare), one-shot (a gradual schedule
    re-computes masks by magnitude during fine-tuning). Returns per layer the relative output
    error of magnitude pruning and of SparseGPT on the calibration inputs
    (``magnitude_error``, ``sparsegpt_error``, see :func:`output_error`). The calibration
    batches are propagated once through the network, layer by layer
    (``codesign.quant.sequential``), so the cost is linear in depth. ``on_layer(name,
    seconds)``, if given, is called after each layer with the seconds it took (propagation
    up to it, Hessian, solve); timings stay out of the returned report so it is reproducible.
    """
    # The spec's own validation says which scopes and schedules SparseGPT supports; it also
    # runs here for a spec built with another method and handed in directly.
    dataclasses.replace(spec, method="sparsegpt")
    plans = {plan.name: plan for plan in plan_pruning(model, spec)}
    report: dict[str, dict[str, Any]] = {}
    model.eval()
    batches = record_batches(forward_loop)
    started = time.perf_counter()
    # Forward order, propagated once: each layer sees the pruned layers before it.
    for name, inputs in layer_inputs(model, list(plans), batches):
        plan = plans[name]
        layer = plan.module
        hessian = input_hessian(layer, inputs)
        del inputs
        order = channel_last_order(layer).to(hessian.device)
        weight = layer.weight.detach().flatten(1)[:, order]
        pruned, keep = sparsegpt_prune(weight, hessian, plan.pattern)
        magnitude_keep = (
            nm_mask(weight, plan.pattern.n, plan.pattern.m)
            if isinstance(plan.pattern, NMPattern)
            else magnitude_mask(weight, plan.pattern.sparsity)
        )
        report[name] = {
            "magnitude_error": output_error(weight, weight * magnitude_keep, hessian),
            "sparsegpt_error": output_error(weight, pruned, hessian),
        }
        inverse = torch.argsort(order)
        shape = layer.weight.shape
        layer.weight.copy_(pruned[:, inverse].view(shape))
        mask = keep[:, inverse].view(shape)
        parametrize.register_parametrization(
            layer, "weight", WeightMask(mask, plan.pattern, plan.scope)
        )
        if on_layer is not None:
            on_layer(name, time.perf_counter() - started)
        started = time.perf_counter()
    return report
