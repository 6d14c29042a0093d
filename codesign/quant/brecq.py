"""Block reconstruction: BRECQ (Li et al., ICLR 2021, "BRECQ: Pushing the Limit of
Post-Training Quantization by Block Reconstruction") with QDrop (Wei et al., ICLR 2022,
"QDrop: Randomly Dropping Quantization for Extremely Low-bit Post-Training Quantization").

AdaRound rounds one layer at a time against that layer's output. Inside a residual block the
two convolutions and the sum interact (the second conv can absorb the first one's rounding
error), so BRECQ reconstructs a whole block at once: the block's weights get AdaRound's soft
rounding W~ = s * clip(floor(W / s) + h(V), qmin, qmax) (``codesign.quant.adaround``), its
activation step sizes are learned as in LSQ, and both minimise the mean squared difference
between the quantized block's output and the float block's output. The float block reads the
float model's input; the quantized block reads what the already reconstructed upstream
produces. BRECQ weights that error with the diagonal Fisher information, which needs a
backward pass through the rest of the network per sample; QDrop reports plain MSE as good as
the Fisher-weighted loss once activations are quantized during reconstruction, and it is used
here.

QDrop: during reconstruction each element of every activation quantizer's output is left
unquantized with probability ``drop_prob`` (0.5, the paper's default), and each element of the
block input comes from the float model with the same probability. The weights so learned stay
good for nearby activation noise (a flatter optimum), which matters most at 4 bits and below.
With ``drop_prob`` 0 this is plain BRECQ with quantized activations.

Units: every module with a residual sum as a direct child (a BasicBlock or Bottleneck, its
downsampling conv included) is one unit; every quantized layer outside such a module (stem
conv, classifier) is a unit of its own. Units whose layers are all at 8 bits (weights and
inputs) are left as calibrated: at 8 bits nearest rounding is within noise of the float
model. Calibration batches are propagated unit by unit (``codesign.quant.sequential``), so the
cost is linear in depth.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Iterator

import torch
from torch import nn

from codesign.data.loops import ForwardLoop
from codesign.errors import QuantError
from codesign.models.residual import ResidualAdd
from codesign.quant.adaround import (
    beta_at,
    inverse_rectified_sigmoid,
    rectified_sigmoid,
    rounding_regularizer,
)
from codesign.quant.fold import fold_batchnorm_
from codesign.quant.modules import QUANT_LAYERS, QuantConv2d, QuantLinear
from codesign.quant.quantizers import ActQuantizer
from codesign.quant.sequential import LayerTimer, finish_unit, layer_inputs, record_batches

QuantLayer = QuantConv2d | QuantLinear


@dataclasses.dataclass(frozen=True)
class BrecqConfig:
    """Reconstruction settings per unit.

    The papers run 20,000 Adam steps of 32 images per block (rounding lr 1e-3, step-size lr
    4e-5). Here 300 steps of 32 images (about 19 passes over 512 calibration images) at the
    rounding rate of ``AdaRoundConfig`` (3e-2): on the ResNet-20 at W4A4 this costs about
    13 s of CPU per block on one thread, and against 1e-2 at the same step count it left
    fewer decisions undecided and moved the validation KL from the float logits from 0.031
    to 0.018 (docs/results/resnet20-quantization.md). The beta schedule, warm-up and
    ``reg_weight`` (lambda for the output error divided by the nearest-rounding error and the
    regularizer averaged over the weights) are those of ``AdaRoundConfig``; decisions still
    soft at the end are thresholded at 0.5 and the reported error is the thresholded one.
    ``scale_lr`` is relative: each step size moves by at most that fraction of its
    calibrated value per step.
    ``drop_prob``: QDrop's probability of leaving an activation element unquantized.
    """

    iterations: int = 300
    batch_size: int = 32
    lr: float = 3e-2
    scale_lr: float = 1e-3
    reg_weight: float = 10.0
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    drop_prob: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_prob <= 1.0:
            raise QuantError(f"drop_prob must lie in [0, 1], got {self.drop_prob}")


def reconstruction_units(model: nn.Module) -> list[tuple[str, list[tuple[str, QuantLayer]]]]:
    """(unit name, its quantized layers with names relative to the model) in forward order.

    A unit is a module with a residual sum as a direct child, or a quantized layer outside
    every such module. Units whose layers all keep 8-bit weights and inputs are left out.
    """
    blocks = [
        name
        for name, module in model.named_modules()
        if name and any(isinstance(child, ResidualAdd) for child in module.children())
    ]
    units: dict[str, list[tuple[str, QuantLayer]]] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, QUANT_LAYERS):
            continue
        owner = next((b for b in blocks if name.startswith(b + ".")), name)
        units.setdefault(owner, []).append((name, layer))
    return [
        (unit, layers)
        for unit, layers in units.items()
        if any(layer.weight_bits < 8 or layer.input_bits < 8 for _, layer in layers)
    ]


class SoftRounding(nn.Module):
    """Stands in for a layer's weight quantizer during reconstruction: the soft-rounded
    weight s * clip(floor(W / s) + h(V), qmin, qmax); pruned zeros stay zero."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> None:
        super().__init__()
        w = weight.detach()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("floor", torch.floor(w / self.scale))
        self.register_buffer("keep", (w != 0).to(w.dtype))
        self.qmin, self.qmax = qmin, qmax
        self.enabled = True  # read by the layer's bias rounding, as on a WeightQuantizer
        self.v = nn.Parameter(inverse_rectified_sigmoid(w / self.scale - self.floor))

    def h(self) -> torch.Tensor:
        return rectified_sigmoid(self.v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        codes = torch.clamp(self.floor + self.h(), self.qmin, self.qmax)
        return codes * self.scale * self.keep

    def hard_codes(self) -> torch.Tensor:
        """The learned integer codes (float tensor): each soft decision thresholded at 0.5."""
        return torch.clamp(
            self.floor + (self.h() >= 0.5).to(self.floor.dtype), self.qmin, self.qmax
        )


@contextlib.contextmanager
def _soft_rounding(layers: list[tuple[str, QuantLayer]]) -> Iterator[dict[str, SoftRounding]]:
    """Swap each layer's weight quantizer for a :class:`SoftRounding`; restored on exit."""
    swapped: dict[str, SoftRounding] = {}
    originals = []
    try:
        for name, layer in layers:
            quantizer = layer.weight_quantizer
            soft = SoftRounding(
                layer.weight_before_quant(), quantizer.scale, quantizer.qmin, quantizer.qmax
            )
            chain = layer.parametrizations.weight  # type: ignore[union-attr]
            originals.append((chain, quantizer))
            chain[len(chain) - 1] = soft
            swapped[name] = soft
        yield swapped
    finally:
        for chain, quantizer in originals:
            chain[len(chain) - 1] = quantizer


@contextlib.contextmanager
def _learned_steps(quantizers: list[ActQuantizer]) -> Iterator[None]:
    """LSQ step sizes for ``quantizers`` (kept positive on exit); restored to fixed after."""
    try:
        for quantizer in quantizers:
            quantizer.learn_scale = True
            quantizer.scale.requires_grad_(True)
        yield
    finally:
        for quantizer in quantizers:
            quantizer.learn_scale = False
            quantizer.scale.requires_grad_(False)
            quantizer.scale.data.abs_().clamp_(min=1e-8)


def drop_quantization(
    quantized: torch.Tensor, unquantized: torch.Tensor, drop_prob: float, generator: torch.Generator
) -> torch.Tensor:
    """QDrop's mix: each element is ``unquantized`` with probability ``drop_prob``, else
    ``quantized`` (same shapes; ``generator`` on their device). Drawn at every probability,
    0 included, so the plain path (``drop_prob`` 0) runs the same code as QDrop's."""
    draw = torch.rand(quantized.shape, generator=generator, device=quantized.device)
    return torch.where(draw < drop_prob, unquantized, quantized)


@contextlib.contextmanager
def _dropping(
    quantizers: list[ActQuantizer], drop_prob: float, generator: torch.Generator
) -> Iterator[None]:
    """Forward hooks that apply :func:`drop_quantization` to each quantizer's output."""

    def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        return drop_quantization(output, inputs[0], drop_prob, generator)

    handles = [q.register_forward_hook(hook) for q in quantizers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No gradient for ``module``'s own parameters (only V and step sizes are learned)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        module.requires_grad_(False)
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


@torch.no_grad()
def _output_error(unit: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, size: int) -> float:
    """Mean squared error per output value of ``unit`` on ``inputs`` against ``targets``."""
    total, count = 0.0, 0
    for start in range(0, inputs.shape[0], size):
        difference = unit(inputs[start : start + size]) - targets[start : start + size]
        total += float(difference.pow(2).sum())
        count += difference.numel()
    return total / max(1, count)


def reconstruct_unit(
    unit: nn.Module,
    layers: list[tuple[str, QuantLayer]],
    quant_inputs: torch.Tensor,
    float_inputs: torch.Tensor,
    targets: torch.Tensor,
    config: BrecqConfig,
) -> dict[str, float]:
    """Learn the rounding of ``layers`` (inside ``unit``) and the step sizes of every
    activation quantizer of ``unit`` so that ``unit(quant_inputs)`` matches ``targets``.

    quant_inputs / float_inputs [N, ...]: the unit's input from the quantized upstream and
    from the float model; targets [N, ...]: the float unit's output on ``float_inputs``. The
    rounding is baked into the stored weights (codes * scale). Returns the mean squared output
    error per value before (nearest rounding, calibrated step sizes) and after, and the
    fraction of soft decisions not exactly 0 or 1 when the optimisation ended.
    """
    device = quant_inputs.device
    quantizers = [m for m in unit.modules() if isinstance(m, ActQuantizer)]
    nearest = _output_error(unit, quant_inputs, targets, 256)
    picker = torch.Generator().manual_seed(config.seed)
    dropper = torch.Generator(device=device).manual_seed(config.seed)
    with _frozen(unit), _soft_rounding(layers) as soft, _learned_steps(quantizers):
        decisions = [s.v for s in soft.values()]
        groups: list[dict] = [{"params": decisions, "lr": config.lr}]
        groups += [
            {"params": [q.scale], "lr": config.scale_lr * float(q.scale.detach().abs())}
            for q in quantizers
        ]
        optimizer = torch.optim.Adam(groups)
        weights = sum(v.numel() for v in decisions)
        norm = max(nearest, 1e-12)
        for step in range(config.iterations):
            pick = torch.randint(quant_inputs.shape[0], (config.batch_size,), generator=picker)
            pick = pick.to(device)
            x = drop_quantization(quant_inputs[pick], float_inputs[pick], config.drop_prob, dropper)
            with torch.enable_grad(), _dropping(quantizers, config.drop_prob, dropper):
                loss = (unit(x) - targets[pick]).pow(2).mean() / norm
                beta = beta_at(step, config)  # type: ignore[arg-type]
                if beta is not None:
                    regularizer = sum(rounding_regularizer(s.h(), beta) for s in soft.values())
                    loss = loss + config.reg_weight * regularizer / weights
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
        with torch.no_grad():
            codes = {name: s.hard_codes() for name, s in soft.items()}
            undecided = sum(float(((s.h() > 0) & (s.h() < 1)).sum()) for s in soft.values())
    with torch.no_grad():
        for name, layer in layers:
            layer.set_weight_before_quant(codes[name] * layer.weight_quantizer.scale.detach())
    return {
        "nearest_error": nearest,
        "learned_error": _output_error(unit, quant_inputs, targets, 256),
        "undecided": undecided / max(1, weights),
    }


@torch.no_grad()
def brecq_(
    model: nn.Module,
    float_model: nn.Module,
    forward_loop: ForwardLoop,
    config: BrecqConfig | None = None,
    on_layer: LayerTimer | None = None,
) -> dict[str, dict[str, float]]:
    """Reconstruct every unit of ``model`` (see :func:`reconstruction_units`) in forward order.

    ``model``: quantized and calibrated (scales set); ``float_model``: its float reference of
    the same structure (BN folded in a copy if ``model`` has none). Both walk the calibration
    batches of ``forward_loop`` in lockstep, pausing before each unit: the quantized walk
    gives the unit's input with every earlier unit already reconstructed. Returns per unit the
    errors of :func:`reconstruct_unit`, ``data_seconds`` and ``seconds``; ``on_layer(unit,
    seconds)`` is called as each unit finishes. Seeded by ``config.seed``; runs where the
    model's tensors are.
    """
    config = config or BrecqConfig()
    units = reconstruction_units(model)
    reference = copy.deepcopy(float_model).eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        fold_batchnorm_(reference)
    names = [name for name, _ in units]
    by_name = dict(units)
    batches = record_batches(forward_loop)
    model.eval()
    report: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    quant_walk = layer_inputs(model, names, batches)
    float_walk = layer_inputs(reference, names, batches)
    for index, ((name, quant_raw), (float_name, float_raw)) in enumerate(
        zip(quant_walk, float_walk, strict=True)
    ):
        if float_name != name:
            raise QuantError(
                f"the float model runs {float_name} where the quantized one runs {name}: "
                "pass the float model the quantized one was made from"
            )
        if not quant_raw:
            raise QuantError(f"{name} received no input during calibration")
        float_unit = reference.get_submodule(name)
        targets = torch.cat([float_unit(x) for x in float_raw])
        quant_inputs, float_inputs = torch.cat(quant_raw), torch.cat(float_raw)
        del quant_raw, float_raw
        data_seconds = time.perf_counter() - started
        unit_config = dataclasses.replace(config, seed=config.seed + index)
        errors = reconstruct_unit(
            model.get_submodule(name),
            by_name[name],
            quant_inputs,
            float_inputs,
            targets,
            unit_config,
        )
        del quant_inputs, float_inputs, targets
        started = finish_unit(report, name, errors, data_seconds, started, on_layer)
    return report
