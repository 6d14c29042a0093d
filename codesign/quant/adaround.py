"""Learned rounding of weights: AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding
for Post-Training Quantization").

Each weight is rounded down or up, W~ = s * clip(floor(W / s) + h(V), qmin, qmax), where the
rectified sigmoid h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1) (zeta = 1.1,
gamma = -0.1, paper eq. 23) is a soft 0/1 decision. V minimises the layer's output error plus
lambda * sum(1 - |2 h(V) - 1|^beta), whose beta anneals from 20 to 2 after a warm-up of 20 % of
the iterations without the term (paper sec. 5), so every h(V) ends at 0 or 1.

The output error is the asymmetric one of the paper (eq. 25 without the activation function):
the float layer on its float input against the quantized layer on the input the already
quantized upstream produces (including this layer's own input quantizer), so each layer also
compensates the error that reaches it. For a linear map that error is a quadratic form in the
im2col input statistics,

    E || W x_f - W~ x_q ||^2 = tr(W G_ff W^T) - 2 tr(W G_fq W~^T) + tr(W~ G_qq W~^T),

with G_ab = E[x_a x_b^T] over every output position ([D, D], D = C * R * S). The three Gram
matrices are gathered once per layer, so each optimisation step costs a few [K, D] x [D, D]
products instead of a pass over the calibration images: the paper's 10^4 iterations per layer
take about a second on a CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable

import torch
from torch import nn

from codesign import distributed
from codesign.data.loops import ForwardLoop
from codesign.errors import QuantError
from codesign.quant.fold import fold_batchnorm_
from codesign.quant.im2col import im2col_row_count, im2col_rows
from codesign.quant.modules import QuantConv2d, QuantLinear
from codesign.quant.sequential import LayerTimer, finish_unit, layer_inputs, record_batches

ZETA, GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid (paper eq. 23)
GRAM_ROWS = 1 << 14  # im2col rows sampled per layer: >= 28 per input dimension (D <= 576)


@dataclasses.dataclass(frozen=True)
class AdaRoundConfig:
    """Optimisation settings. beta schedule and warm-up as in the paper (sec. 5); 500 Adam
    steps at lr 0.03 instead of 10^4 at 1e-3 are 20x fewer steps and still
    leave under 1 % of the decisions undecided (thresholded at 0.5).
    ``reg_weight`` is lambda for the output error divided by the nearest-rounding error and the
    regularizer averaged over the weights; on a synthetic conv 1 left a third of the decisions
    undecided, 10 none, 100 forced them too early (higher error)."""

    iterations: int = 500
    lr: float = 3e-2
    reg_weight: float = 10.0
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """h(V) in [0, 1]: the soft rounding decision (0: down, 1: up)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def inverse_rectified_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """V with h(V) = h for h in (0, 1); ends are pulled in so V stays finite."""
    p = ((h - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


def rounding_regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
    """sum(1 - |2h - 1|^beta): zero iff every decision is exactly 0 or 1."""
    return (1 - (2 * h - 1).abs().pow(beta)).sum()


def beta_at(step: int, config: AdaRoundConfig) -> float | None:
    """Annealed beta at ``step``, or None during the warm-up (no regularizer)."""
    start = int(config.warmup * config.iterations)
    if step < start:
        return None
    fraction = (step - start) / max(1, config.iterations - start)
    return config.beta_end + (config.beta_start - config.beta_end) * (1 - fraction)


def gram_matrices(
    layer: nn.Module,
    float_inputs: list[torch.Tensor],
    quant_inputs: list[torch.Tensor],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(G_ff, G_fq, G_qq) [D, D], each the mean of x_a x_b^T over sampled positions.

    ``float_inputs``/``quant_inputs``: the same batches seen by the float and the quantized
    layer (quant ones already through the layer's input quantizer). Under torch.distributed
    they are this rank's shard: the positions are sampled from the rows of every rank's
    shard (concatenated in rank order), each rank sums the products of the sampled rows it
    holds, and the sums are added over the ranks, so every rank holds the Gram matrices one
    process computes on the concatenated shards.
    """
    count = sum(im2col_row_count(layer, x) for x in float_inputs)
    counts = distributed.all_gather_cat(torch.tensor([count], device=layer.weight.device))
    total, offset = int(counts.sum()), int(counts[: distributed.rank()].sum())
    # Only the sampled rows are built (the same rows, in the same order, as sampling the
    # concatenation of every batch's im2col rows).
    if total > GRAM_ROWS:
        keep = torch.randperm(total, generator=generator)[:GRAM_ROWS]
    else:
        keep = torch.arange(total)
    local = keep[(keep >= offset) & (keep < offset + count)] - offset
    rows_f = im2col_rows(layer, float_inputs, local)
    rows_q = im2col_rows(layer, quant_inputs, local)
    n = keep.numel()
    products = (rows_f.T @ rows_f, rows_f.T @ rows_q, rows_q.T @ rows_q)
    g_ff, g_fq, g_qq = (distributed.all_reduce_(product) / n for product in products)
    return g_ff, g_fq, g_qq


ErrorFn = Callable[[torch.Tensor], torch.Tensor]


def learn_rounding(
    weight: torch.Tensor,
    scale: torch.Tensor,
    qmin: int,
    qmax: int,
    grams: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: AdaRoundConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Integer codes (float tensor, shape of ``weight``) that round each weight down or up.

    weight [K, ...], scale broadcastable to it ([K, 1, ...] or [1, ...]); grams from
    :func:`gram_matrices`. Returns (codes, {"nearest_error", "learned_error", "undecided"}): the
    output mean-squared error per output value for nearest and for the learned rounding, and
    the fraction of soft decisions h(V) not yet exactly 0 or 1 when the optimisation ended.
    """
    g_ff, g_fq, g_qq = grams
    w = weight.detach().reshape(weight.shape[0], -1)
    s = scale.detach().reshape(scale.shape[0], -1).expand_as(w)
    floor = torch.floor(w / s)
    target = w @ g_fq  # [K, D]: the cross term's fixed factor
    constant = float((w @ g_ff * w).sum())

    def output_error(codes: torch.Tensor) -> torch.Tensor:
        w_q = s * torch.clamp(codes, qmin, qmax)
        return ((w_q @ g_qq * w_q).sum() - 2 * (target * w_q).sum() + constant) / w.shape[0]

    nearest = float(output_error(torch.round(w / s)))
    v = inverse_rectified_sigmoid(w / s - floor).requires_grad_(True)
    _optimise(v, floor, output_error, max(nearest, 1e-12), config)
    with torch.no_grad():
        h = rectified_sigmoid(v)
        codes = torch.clamp(floor + (h >= 0.5).float(), qmin, qmax)
        stats = {
            "nearest_error": nearest,
            "learned_error": float(output_error(codes)),
            "undecided": float(((h > 0) & (h < 1)).float().mean()),
        }
    return codes.reshape(weight.shape), stats


def _optimise(
    v: torch.Tensor, floor: torch.Tensor, output_error: ErrorFn, norm: float, config: AdaRoundConfig
) -> None:
    """Adam on V: output error (divided by ``norm``, the nearest-rounding error, so lambda
    does not depend on the layer's output scale) plus lambda x the mean regularizer."""
    optimizer = torch.optim.Adam([v], lr=config.lr)
    for step in range(config.iterations):
        h = rectified_sigmoid(v)
        loss = output_error(floor + h) / norm
        beta = beta_at(step, config)
        if beta is not None:
            loss = loss + config.reg_weight * rounding_regularizer(h, beta) / h.numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def adaround_(
    model: nn.Module,
    float_model: nn.Module,
    forward_loop: ForwardLoop,
    layers: list[tuple[str, QuantConv2d | QuantLinear]],
    config: AdaRoundConfig | None = None,
    on_layer: LayerTimer | None = None,
) -> dict[str, dict[str, float]]:
    """Learn the rounding of ``layers`` and bake it into their weights.

    ``model``: quantized and calibrated (scales set); ``float_model``: the float reference of
    the same structure (BN is folded in a copy if the quantized model has no BN left). The
    calibration batches of ``forward_loop`` are propagated once through both models, layer by
    layer (``codesign.quant.sequential``): each layer's float input comes from the float
    model, its quantized input from ``model`` with every earlier layer already rounded. After
    each layer its stored weight is codes * scale, so nearest rounding reproduces the codes
    and later layers see its final output. Returns per layer the errors of
    :func:`learn_rounding`, ``data_seconds`` (propagation up to the layer and its Gram
    matrices) and ``seconds`` (everything for the layer), which ``on_layer(name, seconds)``
    also receives as each layer finishes.

    The thread count is the caller's (``torch.set_num_threads``, the ``--threads`` flag):
    the [K, D] x [D, D] products are small, and on a busy machine fewer threads than cores
    can be faster, but that is the user's call, not this function's.
    """
    config = config or AdaRoundConfig()
    grouped = [name for name, layer in layers if getattr(layer, "groups", 1) != 1]
    if grouped:
        raise QuantError(f"adaround handles groups=1 only; grouped layers: {grouped[:3]}")
    reference = copy.deepcopy(float_model).eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        fold_batchnorm_(reference)
    by_name = dict(layers)
    names = [name for name, _ in layers]
    batches = record_batches(forward_loop)
    generator = torch.Generator().manual_seed(0)
    report: dict[str, dict[str, float]] = {}
    model.eval()
    started = time.perf_counter()
    # Both walks run in lockstep: each pauses before the same layer, in forward order.
    quant_walk = layer_inputs(model, names, batches)
    float_walk = layer_inputs(reference, names, batches)
    for (name, quant_raw), (float_name, float_inputs) in zip(quant_walk, float_walk, strict=True):
        if float_name != name:
            raise QuantError(
                f"the float model runs {float_name} where the quantized one runs {name}: "
                "pass the float model the quantized one was made from"
            )
        layer = by_name[name]
        quant_inputs = [layer.input_quantizer(x) for x in quant_raw]
        grams = gram_matrices(layer, float_inputs, quant_inputs, generator)
        del quant_raw, float_inputs, quant_inputs
        data_seconds = time.perf_counter() - started
        quantizer = layer.weight_quantizer
        weight = layer.weight_before_quant()
        with torch.enable_grad():
            codes, errors = learn_rounding(
                weight, quantizer.scale, quantizer.qmin, quantizer.qmax, grams, config
            )
        layer.set_weight_before_quant(codes * quantizer.scale.detach())
        started = finish_unit(report, name, errors, data_seconds, started, on_layer)
    return report
