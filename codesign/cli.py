"""The ``codesign`` command line: argparse subcommands, no logic of their own.

Every command takes ``--out DIR`` and writes ``DIR/result.json`` atomically, after all work
is done, so a failed run leaves nothing half-written. Any user error ends with exit status 2
and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from codesign.config import (
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_QAT,
    DEFAULT_VALIDATION_FRACTION,
    PRUNE_METHODS,
)
from codesign.errors import CodesignError, ConfigError
from codesign.resources import bundled_checkpoint, resolve_named_file, resolve_recipe

DEMO_CHECKPOINT = bundled_checkpoint("resnet8-digits")

DESCRIPTION = (
    "Quantize and prune a DNN, capture the real tensors of every layer and simulate them on "
    "accelerator datapaths (systolic arrays, PE arrays, SCNN, 2:4 tensor cores), to weigh "
    "accuracy against energy per inference. Start with `codesign demo --out runs/demo`; "
    "`codesign run RECIPE` runs a whole study, `codesign search RECIPE` the hardware-aware "
    "per-layer co-design search; eval, ptq, qat, prune, simulate and train are the single steps."
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


def _bits(text: str) -> int:
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _common(parser: argparse.ArgumentParser, checkpoint: bool = True) -> None:
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
        "--out", required=True, type=Path, help="output directory for result.json (required)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of training and fine-tuning: data order, augmentation (default: %(default)s)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (default: show them)"
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=DEFAULT_VALIDATION_FRACTION,
        help="share of the training split held out as the validation split (seeded, "
        "class-stratified; never calibrated or trained on) (default: %(default)s)",
    )
    parser.add_argument(
        "--subset-seed",
        type=int,
        default=0,
        help="seed of the validation split and of every calibration/capture subset "
        "(default: %(default)s)",
    )


def _quant_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    when = "(required)" if required else "(default: no quantization; give both bit widths)"
    parser.add_argument(
        "--weight-bits", type=_bits, required=required, help=f"weight bit width, 2 to 8 {when}"
    )
    parser.add_argument(
        "--act-bits",
        type=_bits,
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
        type=_positive_int,
        default=DEFAULT_CALIB_SAMPLES,
        help="training images that calibrate the quantizers (and feed SparseGPT) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--method",
        default=None,
        help="auto = adaround: min-max ranges at 8 bits, MSE ranges and learned "
        "rounding (AdaRound) below | minmax | percentile | mse (nearest rounding) "
        "(default: auto)",
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


def build_parser() -> argparse.ArgumentParser:
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
    _common(p)

    p = command(
        "ptq",
        "post-training quantization",
        "BN folding, per-channel symmetric weights, per-tensor activations, calibrated on "
        "training images; writes the quantized model.pt with its recipe.",
    )
    _common(p)
    _quant_args(p)

    p = command(
        "qat",
        "quantization-aware training (LSQ) from a float checkpoint",
        "PTQ initialisation, then LSQ fine-tuning distilled from the float model; resumes "
        "per epoch from OUT/qat_state.pt.",
    )
    _common(p)
    _quant_args(p)
    p.add_argument("--epochs", type=int, help=f"training epochs (default: {DEFAULT_QAT.epochs})")
    p.add_argument(
        "--lr",
        type=float,
        help=f"peak SGD learning rate, cosine decay (default: {DEFAULT_QAT.lr})",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, help=f"batch size (default: {DEFAULT_QAT.batch_size})"
    )

    p = command(
        "train",
        "train a model from scratch (float)",
        "SGD with cosine decay; resumes per epoch from OUT/train_state.pt.",
    )
    _common(p, checkpoint=False)
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default: %(default)s)")
    p.add_argument(
        "--lr",
        type=float,
        default=0.1,
        help="peak SGD learning rate, cosine decay (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=128, help="batch size (default: %(default)s)"
    )

    p = command(
        "prune",
        "prune (2:4 or a fraction), fine-tune, optionally quantize",
        "the first conv and the classifier stay dense; the model is evaluated one-shot, "
        "then fine-tuned with distillation from the float model, then quantized if both bit "
        "widths are given.",
    )
    _common(p)
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
    # Fine-tuning defaults live in codesign.sparsity.finetune.DEFAULT_FINETUNE (None here
    # keeps the parser free of torch): 3 epochs, lr 0.01, batch 128, KD T=4 weight 0.7.
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: 3; 0: one-shot only)")
    p.add_argument("--lr", type=float, help="peak SGD learning rate, cosine decay (default: 0.01)")
    p.add_argument("--batch-size", type=_positive_int, help="batch size (default: 128)")
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
    # Cubic timing defaults: codesign.sparsity.finetune.CubicTiming.
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
        type=_positive_int,
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
    _quant_args(p, required=False)

    p = command(
        "simulate",
        "capture real tensors and simulate an accelerator",
        "per-layer cycles and energy of one datapath on the model's measured tensors; "
        "writes result.json and layers.csv.",
    )
    _common(p)
    p.add_argument(
        "--samples",
        type=_positive_int,
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
    p.add_argument(
        "--out", required=True, type=Path, help="output directory for the report (required)"
    )
    p.add_argument(
        "--data",
        help="replace the recipe's data source, e.g. imagefolder:DIR (default: the recipe's)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rebuild variants already finished in OUT (default: reuse them)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: show them)")

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
    p.add_argument(
        "--out", required=True, type=Path, help="output directory for the report (required)"
    )
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument(
        "--energy-budget-uj",
        type=float,
        help="energy per inference budget (uJ) on the search datapath: the smallest predicted "
        "accuracy drop within it",
    )
    goal.add_argument(
        "--accuracy-floor",
        type=float,
        help="lowest acceptable top-1 (%%): the least energy predicted to keep it",
    )
    p.add_argument(
        "--data",
        help="replace the recipe's data source, e.g. imagefolder:DIR (default: the recipe's)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="recompute cached variants and search tables (default: reuse them)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: show them)")

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
    return parser


def _quant_spec(args: argparse.Namespace) -> Any:
    from codesign.config import QuantSpec

    keep = tuple(item.strip() for item in args.keep_8bit.split(",") if item.strip())
    return QuantSpec(
        weight_bits=args.weight_bits,
        act_bits=args.act_bits,
        per_channel=not args.per_tensor,
        method=args.method or "auto",
        bias_correction=not args.no_bias_correction,
        keep_8bit=keep,
    )


def _dataset(args: argparse.Namespace) -> Any:
    from codesign.data import load_dataset

    return load_dataset(
        args.data,
        args.download,
        validation_fraction=args.validation_fraction,
        subset_seed=args.subset_seed,
    )


def _subsets(dataset: Any, info: Any = None) -> dict[str, Any]:
    """``result.json["subsets"]``: the validation split and the subsets a build drew."""
    return {"validation": dataset.validation_info.to_dict(), **(info.subsets if info else {})}


def _finish(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    from codesign.io import write_json_atomic

    write_json_atomic(out / "result.json", result)
    print(json.dumps(result, indent=2))
    return result


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.data import evaluate
    from codesign.pipeline import load_model

    model, _, _ = load_model(args.checkpoint, args.model)
    dataset = _dataset(args)
    result = evaluate(model, dataset.test)
    return _finish(args.out, {"top1": result["top1"], "samples": result["samples"]})


def _build(
    args: argparse.Namespace, float_model: Any, dataset: Any, steps: tuple[Any, ...]
) -> tuple[Any, Any]:
    """Run a variant's steps exactly as a recipe variant runs them, recording test top-1
    after each step; resumable training state lives in ``--out``."""
    from codesign.pipeline import BuildContext, build

    args.out.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(
        float_model,
        dataset,
        seed=args.seed,
        calib_samples=args.calib_samples,
        state_dir=args.out,
        progress=not args.quiet,
        evaluate_steps=True,
    )
    return build(ctx, steps)


def _save(args: argparse.Namespace, model: Any, name: str, recipe: dict[str, Any]) -> None:
    from codesign.pipeline import model_kwargs_for, save_model

    save_model(args.out / "model.pt", model, name, recipe, model_kwargs_for(model))
    for state in ("qat_state.pt", "finetune_state.pt"):
        (args.out / state).unlink(missing_ok=True)


def cmd_ptq(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.pipeline import layer_bits_rows, load_model, top1, variant_steps

    spec = _quant_spec(args)
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    dataset = _dataset(args)
    model, info = _build(args, float_model, dataset, variant_steps(quant=spec))
    result = {
        "fp32_top1": top1(float_model, dataset),
        "quant_top1": info.step_top1["ptq"],
        "calib_seconds": info.calib_seconds,
        "calib_samples": info.subsets["calibration"]["size"],
        "subsets": _subsets(dataset, info),
        "quant": spec.to_dict(),
        "layers": layer_bits_rows(model),
    }
    _save(args, model, name, {**recipe, "quant": spec.to_dict()})
    return _finish(args.out, result)


def _qat_train_spec(args: argparse.Namespace) -> Any:
    """The QAT defaults recipes use (``QAT_DEFAULTS``) with the options given."""
    from codesign.config import TrainSpec
    from codesign.recipe import QAT_DEFAULTS

    given = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}
    changes = {key: value for key, value in given.items() if value is not None}
    return TrainSpec(**{**QAT_DEFAULTS, **changes, "seed": args.seed})


def cmd_qat(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.pipeline import layer_bits_rows, load_model, top1, variant_steps

    spec = _quant_spec(args)
    train_spec = _qat_train_spec(args)
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    dataset = _dataset(args)
    model, info = _build(args, float_model, dataset, variant_steps(quant=spec, qat=train_spec))
    result = {
        "fp32_top1": top1(float_model, dataset),
        "ptq_top1": info.step_top1["ptq"],
        "quant_top1": info.step_top1["qat"],
        "calib_seconds": info.calib_seconds,
        "train_seconds": info.train_seconds,
        "subsets": _subsets(dataset, info),
        "epochs": train_spec.epochs,
        "quant": spec.to_dict(),
        "train": train_spec.to_dict(),
        "layers": layer_bits_rows(model),
    }
    _save(args, model, name, {**recipe, "quant": spec.to_dict()})
    return _finish(args.out, result)


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from codesign.config import TrainSpec
    from codesign.models import create_model
    from codesign.pipeline import model_kwargs_for, save_model, top1
    from codesign.train import train

    if not args.model:
        raise ConfigError("train needs --model (see list_models())")
    dataset = _dataset(args)
    torch.manual_seed(args.seed)
    kwargs = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
    model = create_model(args.model, **kwargs)
    spec = TrainSpec(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    history = train(
        model, dataset, spec, state_path=args.out / "train_state.pt", progress=not args.quiet
    )
    result = {
        "top1": top1(model, dataset),
        "train_seconds": history["train_seconds"],
        "train": spec.to_dict(),
    }
    save_model(
        args.out / "model.pt", model, args.model, {"train": spec.to_dict()}, model_kwargs_for(model)
    )
    (args.out / "train_state.pt").unlink(missing_ok=True)
    return _finish(args.out, result)


def _prune_train_spec(args: argparse.Namespace) -> Any:
    """The fine-tuning defaults recipes use (``FINETUNE_DEFAULTS``) with the options given."""
    from codesign.config import TrainSpec
    from codesign.recipe import FINETUNE_DEFAULTS

    given = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "distill_temperature": args.temperature,
        "distill_weight": args.distill_weight,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    return TrainSpec(**{**FINETUNE_DEFAULTS, **changes, "seed": args.seed})


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.config import SparsitySpec
    from codesign.pipeline import load_model, top1, variant_steps
    from codesign.sparsity import sparsity_report

    given = {
        "prune_start": args.prune_start,
        "prune_end": args.prune_end,
        "prune_updates": args.prune_updates,
    }
    spec = SparsitySpec(
        sparsity=args.sparsity,
        scope=args.scope,
        schedule=args.schedule,
        strict=args.strict,
        permute=args.permute,
        method=args.prune_method,
        **{key: value for key, value in given.items() if value is not None},
    )
    if (args.weight_bits is None) != (args.act_bits is None):
        raise ConfigError("give both --weight-bits and --act-bits to quantize after pruning")
    train_spec = _prune_train_spec(args)
    if args.schedule == "cubic" and train_spec.epochs == 0:
        raise ConfigError("--schedule cubic prunes during fine-tuning: give --epochs >= 1")
    quant_spec = _quant_spec(args) if args.weight_bits is not None else None
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    dataset = _dataset(args)
    steps = variant_steps(sparsity=spec, finetune=train_spec, quant=quant_spec)
    cpu_started = time.process_time()  # all threads: wall time hides contention
    model, info = _build(args, float_model, dataset, steps)
    # The one-shot model is the spec's final level at once, before any fine-tuning.
    result: dict[str, Any] = {
        "spec": spec.to_dict(),
        **info.pruning,
        "fp32_top1": top1(float_model, dataset),
        "oneshot_top1": info.step_top1["prune"],
        "pruned_top1": info.step_top1.get("finetune", info.step_top1["prune"]),
    }
    if train_spec.epochs > 0:
        result["train"] = train_spec.to_dict()
    # Measured on the float pruned model's masks: quantization keeps pruned zeros exact.
    report = sparsity_report(model)
    result.update(
        {
            "sparsity": report["sparsity"],
            "pruned_sparsity": report["pruned_sparsity"],
            "nm_compliant": all(row["nm_compliant"] is not False for row in report["layers"]),
            "layers": [
                {
                    "name": row["name"],
                    "sparsity": row["sparsity"],
                    "pattern": row["pattern"],
                    "nm_compliant": row["nm_compliant"],
                }
                for row in report["layers"]
            ],
            "train_seconds": info.train_seconds,
            "train_cpu_seconds": time.process_time() - cpu_started if train_spec.epochs else 0.0,
            "subsets": _subsets(dataset, info),
        }
    )
    new_recipe = {**recipe, "sparsity": spec.to_dict()}
    if quant_spec is not None:
        result["quant_top1"] = info.step_top1["ptq"]
        result["calib_seconds"] = info.calib_seconds
        new_recipe["quant"] = quant_spec.to_dict()
    _save(args, model, name, new_recipe)
    return _finish(args.out, result)


def cmd_simulate(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.data import make_forward_loop
    from codesign.hw import (
        capture,
        load_arch,
        load_energy_table,
        simulate,
        summarize,
        write_layers_csv,
    )
    from codesign.pipeline import load_model

    arch_path = resolve_named_file(args.arch, "hardware")
    arch = load_arch(arch_path)
    energy_path = None if args.energy is None else resolve_named_file(args.energy, "energy")
    energy = load_energy_table(energy_path)
    model, _, _ = load_model(args.checkpoint, args.model)
    dataset = _dataset(args)
    images, captured = dataset.capture_set(args.samples)
    records = capture(model, make_forward_loop(images, 64))
    costs = simulate(records, arch, energy)
    result = summarize(costs, arch_path.stem)
    result["subsets"] = {
        "validation": dataset.validation_info.to_dict(),
        "capture": captured.to_dict(),
    }
    write_layers_csv(costs, args.out / "layers.csv")
    return _finish(args.out, result)


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    """The main job on the embedded default: the bundled recipe ``digits`` (the digits
    ResNet-8 in FP32, INT8/INT4 PTQ, INT4 QAT, 2:4 and unstructured, on a dense systolic
    array, SCNN and a 2:4 tensor core) with the full report."""
    import torch

    from codesign.experiment import run_recipe
    from codesign.recipe import load_recipe

    # One thread: on 8x8 digits a second thread costs more in synchronisation than it saves,
    # and on a shared machine oversubscribed threads made fine-tuning 30x slower (measured).
    torch.set_num_threads(1)
    recipe = load_recipe(resolve_recipe("digits"))
    results = run_recipe(recipe, args.out, progress=not args.quiet)
    summary = {
        "data": results["data"],
        "checkpoint": DEMO_CHECKPOINT.name,
        "report": str(args.out / "report.html"),
        "variants": [{"variant": v["variant"], "top1": v["top1"]} for v in results["variants"]],
    }
    from codesign.io import write_json_atomic

    write_json_atomic(args.out / "result.json", summary)
    return summary


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.experiment import run_recipe
    from codesign.recipe import load_recipe

    recipe = load_recipe(resolve_recipe(args.recipe), data_override=args.data)
    return run_recipe(recipe, args.out, force=args.force, progress=not args.quiet)


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.experiment import check_out_dir, open_study, run_recipe, run_study
    from codesign.recipe import load_recipe
    from codesign.search import run_search

    recipe = load_recipe(resolve_recipe(args.recipe), data_override=args.data)
    check_out_dir(args.out)
    study = open_study(recipe, args.out, progress=not args.quiet)
    scored = run_study(study, force=args.force)
    search = run_search(
        study,
        scored,
        energy_budget_uj=args.energy_budget_uj,
        accuracy_floor=args.accuracy_floor,
        force=args.force,
    )
    return run_recipe(recipe, args.out, progress=not args.quiet, search=search, study=study)


COMMANDS = {
    "eval": cmd_eval,
    "ptq": cmd_ptq,
    "qat": cmd_qat,
    "train": cmd_train,
    "prune": cmd_prune,
    "simulate": cmd_simulate,
    "demo": cmd_demo,
    "run": cmd_run,
    "search": cmd_search,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except CodesignError as exc:
        sys.stderr.write(f"codesign: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("codesign: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
