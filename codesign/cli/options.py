"""Option types and the option groups several commands share (data, output, quantization,
where to compute).

Only argparse and the torch-free config constants here: defining options reads no bundled
file and loads no model code.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from codesign.config import DEFAULT_CALIB_SAMPLES, DEFAULT_VALIDATION_FRACTION
from codesign.errors import ConfigError


def bit_width(text: str) -> int:
    """An argparse type: a supported bit width (2..8)."""
    from codesign.config import check_bits

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bit width must be an integer 2..8, got {text!r}"
        ) from None
    try:
        return check_bits(value, "")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def name_list(text: str) -> list[str]:
    """An argparse type: a comma list of names, none empty, in the order given (repeats
    dropped)."""
    names = [name.strip() for name in text.split(",")]
    if not text.strip() or any(not name for name in names):
        raise argparse.ArgumentTypeError(f"expected a comma list of names, got {text!r}")
    return list(dict.fromkeys(names))


def device(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether it exists is
    checked when the command starts)."""
    from codesign.runtime import parse_device

    try:
        return parse_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_runtime(
    parser: argparse.ArgumentParser, threads_default: int | None = None, recipe: bool = False
) -> None:
    """Where the command computes: ``--device``, ``--threads``, ``--amp``. With ``recipe``,
    an unset ``--device``/``--amp`` takes the recipe's ``device``/``amp``."""
    fallback = "the recipe's device, else auto" if recipe else "auto"
    parser.add_argument(
        "--device",
        type=device,
        help="where models, data and calibration run: auto (CUDA when available) | cpu | cuda "
        f"| cuda:N; under torchrun cuda is each process's LOCAL_RANK GPU (default: {fallback})",
    )
    threads = (
        f"{threads_default}" if threads_default is not None else "torch's default, one per core"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=threads_default,
        help=f"torch intra-op CPU threads (default: {threads})",
    )
    amp_fallback = "the recipe's amp, else off" if recipe else "off"
    parser.add_argument(
        "--amp",
        choices=["off", "bf16"],
        help="bf16: training and fine-tuning (QAT included) under bfloat16 autocast; "
        f"quantizers stay fp32 (default: {amp_fallback})",
    )


def seed(text: str) -> int:
    """An argparse type: a seed, an integer from 0 to 2**64 - 1 (what torch takes)."""
    from codesign.config import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"expected a seed, an integer from 0 to 2**64 - 1, got {text!r}"
        )
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (budgets)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1) (shares of a split)."""
    value = _finite(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def percent(text: str) -> float:
    """An argparse type: a top-1 in (0, 100] (%)."""
    value = _finite(text)
    if not 0.0 < value <= 100.0:
        raise argparse.ArgumentTypeError(f"expected a top-1 in (0, 100] (%), got {text!r}")
    return value


def add_common(parser: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    """Model, data, output and seed options of the single-step commands."""
    parser.add_argument(
        "--model",
        help="model name, e.g. resnet20, resnet8, resnet18 (default: what the checkpoint says)"
        if checkpoint
        else "model to train from scratch, e.g. resnet8, resnet20 (required)",
    )
    if checkpoint:
        parser.add_argument(
            "--checkpoint", required=True, help="checkpoint file, .th/.pt/.pth (required)"
        )
    parser.add_argument(
        "--data",
        default="digits",
        help="data set: digits (embedded) | cifar10:DIR | imagefolder:DIR | npz:FILE "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let cifar10:DIR download CIFAR-10 when it is missing (default: never download)",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        help="resize (shorter side to N*256/224) and centre-crop imagefolder/cifar10 images to "
        "N (default: 224 for a torchvision ImageNet checkpoint on an image folder, else as "
        "stored)"
        if checkpoint
        else "resize (shorter side to N*256/224) and centre-crop imagefolder/cifar10 images "
        "to N (default: as stored)",
    )
    add_stream_options(parser)
    parser.add_argument(
        "--out", required=True, type=Path, help="output directory for result.json (required)"
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of training and fine-tuning: data order, augmentation (default: %(default)s)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (default: show them)"
    )
    parser.add_argument(
        "--validation-fraction",
        type=fraction,
        default=DEFAULT_VALIDATION_FRACTION,
        help="share of the training split held out as the validation split (seeded, "
        "class-stratified; never calibrated or trained on) (default: %(default)s)",
    )
    parser.add_argument(
        "--subset-seed",
        type=seed,
        default=0,
        help="seed of the validation split and of every calibration/capture subset "
        "(default: %(default)s)",
    )
    add_runtime(parser)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def add_stream_options(parser: argparse.ArgumentParser) -> None:
    """--stream and --workers: decode image folders per batch instead of preloading them."""
    parser.add_argument(
        "--stream",
        action="store_true",
        help="decode imagefolder:DIR / cifar10:DIR images batch by batch with a DataLoader "
        "(random resized crops and flips for training) instead of loading them into memory; "
        "for data larger than memory (default: preload)",
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        help="DataLoader worker processes that decode streamed images; 0 decodes in the main "
        "process; results do not depend on it (default: the usable cores less one, at most 8)",
    )


def add_quant_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Quantization options: bit widths, calibration and the PTQ method."""
    when = "(required)" if required else "(default: no quantization; give both bit widths)"
    parser.add_argument(
        "--weight-bits", type=bit_width, required=required, help=f"weight bit width, 2 to 8 {when}"
    )
    parser.add_argument(
        "--act-bits",
        type=bit_width,
        required=required,
        help=f"activation (layer input) bit width, 2 to 8 {when}",
    )
    parser.add_argument(
        "--keep-8bit",
        default="",
        help="comma list of layers kept at 8 bits: first, last, or layer name patterns "
        "(default: none)",
    )
    parser.add_argument(
        "--calib-samples",
        type=positive_int,
        default=DEFAULT_CALIB_SAMPLES,
        help="training images that calibrate the quantizers (and feed SparseGPT) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--method",
        default=None,
        help="auto: brecq when some layer input is below 8 bits, gptq when only weights "
        "are, min-max ranges at 8 bits (with --calib-budget-s: the best of gptq, adaround "
        "and brecq on the validation split) | brecq: block reconstruction with QDrop (rounding "
        "and activation step sizes per residual block) | adaround: MSE ranges and learned "
        "rounding (AdaRound) below 8 bits | gptq: min-max weight ranges, GPTQ rounding below "
        "8 bits (joint with 2:4 masks) | minmax | percentile | mse (nearest rounding) "
        "(default: auto)",
    )
    parser.add_argument(
        "--calib-budget-s",
        type=positive_float,
        default=None,
        help="with --method auto: seconds of calibration within which gptq, adaround and "
        "brecq run, cheapest first, each while its estimated time fits; the best on the "
        "validation split is kept (default: no limit, the method by bit widths)",
    )
    parser.add_argument(
        "--per-tensor",
        action="store_true",
        help="one weight scale per tensor (default: one per output channel)",
    )
    parser.add_argument(
        "--no-bias-correction",
        action="store_true",
        help="skip the empirical bias correction of layers below 8 bits that keep nearest "
        "rounding (default: correct them)",
    )
