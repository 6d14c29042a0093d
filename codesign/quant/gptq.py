"""GPTQ: weight rounding that compensates each rounding error on the columns not yet rounded
(Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", ICLR 2023), with joint N:M pruning in the same sweep (as OBC, Frantar & Alistarh
2022, and SparseGPT do).

For a layer with inputs X (im2col rows) and H = X^T X / P, rounding one row w [D] to q costs
(w - q)^T H (w - q) in squared output error. GPTQ visits the columns in order; column i is
rounded to the quantizer's grid (the row's own scale, so the fake-quant forward reproduces the
code exactly), and the rest of the row moves by -(w_i - q_i) [H^-1]_i: / [H^-1]_ii, the least-
squares repair on the columns after it (Optimal Brain Surgeon with a grid instead of a zero).
The upper Cholesky factor U of H^-1 holds every step's update and error at once: column i adds
((w'_i - q_i) / U_ii)^2 to the output error, so the total is the sum over columns, each term
at most (s/2)^2 / U_ii^2 while no code is clamped (the nearest-plane bound).

Paper details kept: act-order (columns by descending diag H, the inputs with the most energy
first while the most columns can still absorb their error; restored afterwards), lazy block
updates (the column loop runs inside a block of 128 columns, the columns after it are updated
once per block with one matrix product), 1 % dampening of H's mean diagonal, inputs never
seen zeroed. The Hessian is SparseGPT's (``codesign.sparsity.obs.input_hessian``), on the
layer's input as its own input quantizer rounds it, so H is what the quantized weights
actually multiply.

Joint N:M: a 2:4-masked layer chooses its mask again inside the sweep. At the first column of
each group of M (groups stay whole under act-order, which then orders groups by their summed
diag H), the M - N weights of the group with the least OBS cost w'^2 / U_ii^2 are removed
(code 0, exactly 0 after quantization), the kept ones rounded, and every error, removal or
rounding, is compensated on the later columns. Weights already pruned enter at 0, the cheapest
to remove, so the existing mask is mostly kept; an unstructured mask is kept as it is (its
zeros are forced, their neighbours still compensate).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn

from codesign.data.loops import ForwardLoop
from codesign.errors import QuantError
from codesign.quant.modules import QuantConv2d, QuantLinear
from codesign.quant.sequential import LayerTimer, layer_inputs, record_batches
from codesign.sparsity.masks import NMPattern
from codesign.sparsity.obs import (
    channel_last_order,
    column_sweep,
    input_hessian,
    inverse_hessian_factor,
    output_error,
)
from codesign.sparsity.prune import WeightMask


@dataclasses.dataclass(frozen=True)
class GPTQConfig:
    """The paper's settings: blocks of 128 columns, dampening 1 % of mean(diag H), act-order."""

    block_columns: int = 128
    damping: float = 0.01
    act_order: bool = True


@dataclasses.dataclass(frozen=True)
class GPTQResult:
    """``codes`` [K, D] integer-valued (float64) with weight = codes * scale; ``keep`` [K, D]
    bool (False: pruned, code 0); ``column_errors`` [K, D] (w'_i - q_i) / U_ii of each column
    as it was rounded, whose squares sum to the row's output error (w - q)^T H (w - q) with H
    the dampened Hessian."""

    codes: torch.Tensor
    keep: torch.Tensor
    column_errors: torch.Tensor


def column_order(hessian: torch.Tensor, group: int) -> torch.Tensor:
    """Act-order [D]: columns by descending diag H (stable), whole groups of ``group``
    adjacent columns ordered by their summed diagonal when ``group`` > 1."""
    diagonal = hessian.diagonal()
    if group == 1:
        return torch.argsort(diagonal, descending=True, stable=True)
    groups = torch.argsort(diagonal.view(-1, group).sum(1), descending=True, stable=True)
    offsets = torch.arange(group, device=hessian.device)
    return (groups[:, None] * group + offsets[None, :]).reshape(-1)


@torch.no_grad()
def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    scale: torch.Tensor,
    qmin: int,
    qmax: int,
    *,
    nm: NMPattern | None = None,
    keep: torch.Tensor | None = None,
    config: GPTQConfig | None = None,
) -> GPTQResult:
    """Round ``weight`` [K, D] to codes on the grid ``scale * [qmin, qmax]`` with GPTQ.

    ``hessian`` [D, D]: X^T X / P of the layer's inputs, columns in the order of ``weight``
    (N:M groups adjacent). ``scale``: [K] per row or one element. ``nm``: choose an N:M mask
    in the sweep (joint pruning); ``keep`` [K, D] bool: a fixed mask (False entries get code
    0). Returns codes in the input column order (see :class:`GPTQResult`).
    """
    config = config or GPTQConfig()
    rows, columns = weight.shape
    if not (torch.isfinite(hessian).all() and torch.isfinite(weight).all()):
        raise QuantError(
            "GPTQ got NaN/Inf in the layer's weights or calibration activations: check the "
            "checkpoint and the input data (or use method 'mse')"
        )
    group = nm.m if nm is not None else 1
    if columns % group:
        raise QuantError(f"{columns} columns do not split into groups of M={group} for {nm}")
    device = weight.device
    order = (
        column_order(hessian, group) if config.act_order else torch.arange(columns, device=device)
    )
    h_inv, dead = inverse_hessian_factor(
        hessian[order][:, order], config.damping, "GPTQ", QuantError
    )
    work = weight.detach().double()[:, order].clone()
    work[:, dead] = 0.0  # inputs never seen: nothing to fit, code 0
    removed = (
        torch.zeros(rows, columns, dtype=torch.bool, device=device)
        if keep is None
        else ~keep.to(device)[:, order]
    )
    s = scale.detach().double().to(device).flatten().expand(rows)
    codes = torch.zeros_like(work)

    def round_column(
        index: int, local: int, block: torch.Tensor, diagonal: torch.Tensor
    ) -> torch.Tensor:
        if nm is not None and local % group == 0:
            span = slice(index, index + group)
            cost = block[:, local : local + group] ** 2 / diagonal[local : local + group] ** 2
            drop = cost.topk(group - nm.n, dim=1, largest=False).indices
            removed[:, span] = False
            removed[:, span].scatter_(1, drop, True)
        code = torch.clamp(torch.round(block[:, local] / s), qmin, qmax)
        codes[:, index] = torch.where(removed[:, index], 0.0, code)
        return codes[:, index] * s

    block_columns = group * max(1, config.block_columns // group)
    column_errors = column_sweep(work, h_inv, block_columns, round_column)
    inverse = torch.argsort(order)
    return GPTQResult(codes[:, inverse], ~removed[:, inverse], column_errors[:, inverse])


def _mask_of(layer: nn.Module) -> WeightMask | None:
    first = layer.parametrizations.weight[0]  # type: ignore[union-attr]
    return first if isinstance(first, WeightMask) else None


@torch.no_grad()
def gptq_(
    model: nn.Module,
    forward_loop: ForwardLoop,
    layers: list[tuple[str, QuantConv2d | QuantLinear]],
    config: GPTQConfig | None = None,
    on_layer: LayerTimer | None = None,
) -> dict[str, dict[str, Any]]:
    """GPTQ on ``layers`` of a quantized, calibrated ``model`` (scales set), in forward order.

    The calibration batches of ``forward_loop`` are propagated once through ``model``
    (``codesign.quant.sequential``); each layer is solved on the inputs the already solved
    layers before it produce, through its own input quantizer, and its stored weight becomes
    codes * scale, a fixed point of its weight quantizer. A 2:4 (N:M) mask is chosen again
    in the same sweep and written back to the layer's ``WeightMask``. Returns per layer the
    relative output errors of nearest rounding and of GPTQ on the calibration inputs
    (``nearest_error``, ``gptq_error``, as ``output_error``), ``mask_changed`` (entries of an
    N:M mask that moved) and ``seconds``, which ``on_layer(name, seconds)`` also receives.
    """
    config = config or GPTQConfig()
    grouped = [name for name, layer in layers if getattr(layer, "groups", 1) != 1]
    if grouped:
        raise QuantError(f"gptq handles groups=1 only; grouped layers: {grouped[:3]}")
    by_name = dict(layers)
    batches = record_batches(forward_loop)
    report: dict[str, dict[str, Any]] = {}
    model.eval()
    started = time.perf_counter()
    for name, raw in layer_inputs(model, list(by_name), batches):
        layer = by_name[name]
        if not raw:
            raise QuantError(f"layer {name} received no input during calibration")
        hessian = input_hessian(layer, [layer.input_quantizer(x) for x in raw], torch.float32)
        del raw
        order = channel_last_order(layer).to(hessian.device)
        inverse = torch.argsort(order)
        shape = layer.weight.shape
        weight = layer.weight_before_quant().flatten(1)[:, order]
        quantizer = layer.weight_quantizer
        scale = quantizer.scale.detach().flatten()
        mask = _mask_of(layer)
        nm = mask.pattern if mask is not None and isinstance(mask.pattern, NMPattern) else None
        fixed = mask.mask.flatten(1)[:, order] if mask is not None and nm is None else None
        result = gptq_quantize(
            weight,
            hessian,
            scale,
            quantizer.qmin,
            quantizer.qmax,
            nm=nm,
            keep=fixed,
            config=config,
        )
        s = scale.double().view(-1, 1)
        nearest = torch.clamp(torch.round(weight.double() / s), quantizer.qmin, quantizer.qmax)
        report[name] = {
            "nearest_error": output_error(weight, nearest * s, hessian),
            "gptq_error": output_error(weight, result.codes * s, hessian),
            "mask_changed": 0,
        }
        codes = result.codes[:, inverse].reshape(shape).to(weight.dtype)
        if mask is not None:
            new_mask = result.keep[:, inverse].reshape(shape)
            report[name]["mask_changed"] = int((new_mask != mask.mask).sum())
            mask.mask.copy_(new_mask)
        # Written past the mask: a newly kept weight may sit where the stored one was zeroed.
        original = layer.parametrizations.weight.original  # type: ignore[union-attr]
        original.copy_(codes * quantizer.scale.detach())
        report[name]["seconds"] = time.perf_counter() - started
        if on_layer is not None:
            on_layer(name, report[name]["seconds"])
        started = time.perf_counter()
    return report


def is_fixed_point(layer: QuantConv2d | QuantLinear) -> bool:
    """True when the layer's weight quantizer returns its input unchanged (codes * scale)."""
    with torch.no_grad():
        before = layer.weight_before_quant()
        return bool(torch.equal(layer.weight_quantizer(before), before))
