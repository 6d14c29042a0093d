"""The ``codesign`` argument parser: every subcommand, option, default and help text.

It defines options only and reads no bundled file; each command imports what it needs when
it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codesign.cli.options import (
    add_common,
    add_quant_args,
    add_runtime,
    add_stream_options,
    name_list,
    percent,
    positive_float,
    positive_int,
)
from codesign.config import DEFAULT_QAT, PRUNE_METHODS

DESCRIPTION = (
    "Quantize and prune a DNN, capture the real tensors of every layer and simulate them on "
    "accelerator datapaths (systolic arrays, PE arrays, SCNN, 2:4 tensor cores), to weigh "
    "accuracy against energy per inference. Start with `codesign demo --out runs/demo`; "
    "`codesign run RECIPE` runs a whole study, `codesign search RECIPE` the hardware-aware "
    "per-layer co-design search, `codesign report DIR` the report of variants built apart; "
    "eval, ptq, qat, prune, export, simulate and train are the single steps."
)
EPILOG = "Each command's options: codesign COMMAND --help. Manual: docs/cli.md."


def _version() -> str:
    """The installed distribution's version, else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("codesign")
    except PackageNotFoundError:
        from codesign import __version__

        return __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        sys.stderr.write(f"codesign: error: {message} (see --help)\n")
        sys.exit(2)


def _study_options(p: argparse.ArgumentParser, force_help: str) -> None:
    """--out, --data, --stream, --workers, --force and --quiet of the commands that run a
    recipe."""
    p.add_argument(
        "--out", required=True, type=Path, help="output directory for the report (required)"
    )
    p.add_argument(
        "--data",
        help="replace the recipe's data source, e.g. imagefolder:DIR (default: the recipe's)",
    )
    add_stream_options(p)  # replaces the recipe's [data] stream / workers when given
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: show them)")
    add_runtime(p, recipe=True)


def build_parser() -> argparse.ArgumentParser:
    """The ``codesign`` parser with its ten subcommands, in the order ``--help`` lists them."""
    parser = _Parser(prog="codesign", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument(
        "--version",
        action="version",
        version=f"codesign {_version()}",
        help="print codesign's version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=f"{summary}: {description}")

    p = command("eval", "top-1 accuracy of a checkpoint", "on the test split of --data.")
    add_common(p)
    p.add_argument(
        "--integer",
        action="store_true",
        help="run a quantized checkpoint on integer-only ops (integer codes, int32 "
        "accumulation, dyadic requantization) and compare it with the fake-quant model "
        "(default: the model as stored)",
    )

    p = command(
        "ptq",
        "post-training quantization",
        "BN folding, per-channel symmetric weights, per-tensor activations, calibrated on "
        "training images; writes the quantized model.pt with its recipe.",
    )
    add_common(p)
    add_quant_args(p)

    p = command(
        "qat",
        "quantization-aware training (LSQ) from a float checkpoint",
        "PTQ initialisation, then LSQ fine-tuning distilled from the float model; resumes "
        "per epoch from OUT/qat_state.pt.",
    )
    add_common(p)
    add_quant_args(p)
    p.add_argument("--epochs", type=int, help=f"training epochs (default: {DEFAULT_QAT.epochs})")
    p.add_argument(
        "--lr",
        type=float,
        help=f"peak SGD learning rate, cosine decay (default: {DEFAULT_QAT.lr})",
    )
    p.add_argument(
        "--batch-size", type=positive_int, help=f"batch size (default: {DEFAULT_QAT.batch_size})"
    )
    p.add_argument(
        "--progressive",
        metavar="BITS:EPOCHS,...",
        help="progressive QAT: train these stages first, widest first, each with every "
        "narrower quantizer widened to BITS, then --epochs at the final widths, e.g. 4:3,3:3 "
        "for W2A2 (default: none)",
    )

    p = command(
        "train",
        "train a model from scratch (float)",
        "SGD with cosine decay; resumes per epoch from OUT/train_state.pt.",
    )
    add_common(p, checkpoint=False)
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default: %(default)s)")
    p.add_argument(
        "--lr",
        type=float,
        default=0.1,
        help="peak SGD learning rate, cosine decay (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=128, help="batch size (default: %(default)s)"
    )

    p = command(
        "prune",
        "prune (2:4 or a fraction), fine-tune, optionally quantize",
        "the first conv and the classifier stay dense; the model is evaluated one-shot, "
        "then fine-tuned with distillation from the float model, then quantized if both bit "
        "widths are given.",
    )
    add_common(p)
    p.add_argument(
        "--sparsity", required=True, help="N:M pattern (2:4) or a fraction (0.7) (required)"
    )
    p.add_argument(
        "--scope",
        default="layer",
        choices=["layer", "global", "lamp"],
        help="layer: every layer at the level; global: one magnitude threshold; lamp: one "
        "threshold on LAMP scores (default: %(default)s)",
    )
    p.add_argument(
        "--schedule",
        default="oneshot",
        choices=["oneshot", "cubic"],
        help="oneshot: the final level at once; cubic: raised over the fine-tuning (Zhu & "
        "Gupta 2017) (default: %(default)s)",
    )
    # Fine-tuning defaults live in codesign.config.DEFAULT_FINETUNE: 3 epochs, lr 0.01, batch
    # 128, KD T=4 weight 0.7. None here lets specs.prune_train_spec fill in exactly what a
    # recipe's [finetune] table gets.
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: 3; 0: one-shot only)")
    p.add_argument("--lr", type=float, help="peak SGD learning rate, cosine decay (default: 0.01)")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default: 128)")
    p.add_argument(
        "--temperature",
        type=float,
        help="distillation temperature (default: 4; 0: no distillation)",
    )
    p.add_argument(
        "--distill-weight",
        type=float,
        help="share of the distillation term in the loss (default: 0.7)",
    )
    # Cubic timing defaults: SparsitySpec.prune_start / prune_end / prune_updates.
    p.add_argument(
        "--prune-start",
        type=float,
        help="cubic: first mask update, as a fraction of the steps (default: 0)",
    )
    p.add_argument(
        "--prune-end",
        type=float,
        help="cubic: last mask update, as a fraction of the steps (default: 0.6)",
    )
    p.add_argument(
        "--prune-updates",
        type=positive_int,
        help="cubic: mask updates per epoch (default: 10)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="error on layers an N:M pattern cannot divide (default: leave them dense)",
    )
    p.add_argument(
        "--permute",
        action="store_true",
        help="N:M: reorder input channels first so groups keep more magnitude (Pool & Yu "
        "2021) (default: off)",
    )
    p.add_argument(
        "--prune-method",
        default="magnitude",
        choices=PRUNE_METHODS,
        help="magnitude: keep the largest weights; sparsegpt: masks by output error on "
        "--calib-samples training images, kept weights repaired (Frantar & Alistarh 2023; "
        "one-shot, layer scope) (default: %(default)s)",
    )
    add_quant_args(p, required=False)

    p = command(
        "export",
        "export a quantized checkpoint as a deployable model, checked",
        "an ONNX QDQ graph (opset 21: per-channel integer weight codes, INT8 or INT4, "
        "per-tensor activations, BN folded, quantized residual sums) written to OUT/model.onnx "
        "and run in onnxruntime on the test split beside the PyTorch model; needs "
        "pip install 'codesign[export]'.",
    )
    add_common(p)
    p.add_argument(
        "--format", default="onnx", choices=["onnx"], help="output format (default: %(default)s)"
    )

    p = command(
        "simulate",
        "capture real tensors and simulate an accelerator",
        "per-layer cycles and energy of one datapath on the model's measured tensors; "
        "writes result.json and layers.csv.",
    )
    add_common(p)
    p.add_argument(
        "--samples",
        type=positive_int,
        default=32,
        help="validation images whose tensors are captured (default: %(default)s)",
    )
    p.add_argument(
        "--arch",
        required=True,
        help="datapath: a bundled hardware name such as scnn, or a hardware .toml (required)",
    )
    p.add_argument(
        "--energy",
        default=None,
        help="energy table: a bundled name such as eyeriss-relative, or an energy .toml "
        "(default: horowitz45)",
    )

    p = command(
        "run",
        "run every variant of a recipe and write the report",
        "prune, fine-tune, PTQ, QAT as each variant says, then accuracy, one capture and "
        "every datapath simulated; resumes from OUT/variants/.",
    )
    p.add_argument("recipe", help="recipe: a bundled name such as digits, or a recipe .toml")
    _study_options(p, "rebuild variants already finished in OUT (default: reuse them)")
    p.add_argument(
        "--variants",
        type=name_list,
        help="comma list of the recipe's variant names: build only those, and write the "
        "report only if they are all of them (default: every variant and the report)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="worker processes building variants at once, each with this process's torch "
        "threads (default: %(default)s)",
    )

    p = command(
        "report",
        "write the report of a study from its cached variants",
        "reads DIR/study.json and the variants that `codesign run` built into DIR (in any "
        "number of processes) and writes results.json and the other report files; builds "
        "nothing, and names the variants still missing.",
    )
    p.add_argument("dir", type=Path, help="the --out directory of `codesign run` (required)")

    p = command(
        "search",
        "hardware-aware per-layer precision/sparsity search",
        "the recipe's variants, then per-layer widths and sparsity chosen from measured "
        "sensitivity and simulated per-layer energy, the chosen configurations built and "
        "verified; give exactly one of --energy-budget-uj and --accuracy-floor.",
    )
    p.add_argument(
        "recipe",
        help="recipe with a [search] table: a bundled name such as digits, or a recipe .toml",
    )
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument(
        "--energy-budget-uj",
        type=positive_float,
        help="energy per inference budget (uJ) on the search datapath: the smallest predicted "
        "accuracy drop within it",
    )
    goal.add_argument(
        "--accuracy-floor",
        type=percent,
        help="lowest acceptable top-1 (%%): the least energy predicted to keep it",
    )
    _study_options(p, "recompute cached variants and search tables (default: reuse them)")
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="worker processes building variants at once (the recipe's, the search's uniform "
        "models and its verified configurations), each with this process's torch threads; "
        "e.g. --jobs 2 --threads 1 on two cores (default: %(default)s)",
    )

    p = command(
        "demo",
        "the main job on the embedded digits data",
        "runs the bundled digits recipe (ResNet-8 in FP32, INT8/INT4 PTQ, INT4 QAT, 2:4 and "
        "unstructured, on a systolic array, SCNN and a 2:4 tensor core) and writes its report.",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="output directory for the report (required)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: show them)")
    # One thread by default: on 8x8 digits a second thread costs more in synchronisation than
    # it saves, and oversubscribed threads on a shared machine made fine-tuning 30x slower.
    add_runtime(p, threads_default=1, recipe=True)
    return parser
