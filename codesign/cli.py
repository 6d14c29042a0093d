"""The ``codesign`` command line: argparse subcommands, no logic of their own.

Every command takes ``--out DIR`` and writes ``DIR/result.json`` atomically, after all work
is done, so a failed run leaves nothing half-written. Any user error ends with exit status 2
and one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from codesign.config import DEFAULT_CALIB_SAMPLES, PRUNE_METHODS
from codesign.errors import CodesignError, ConfigError
from codesign.resources import bundled_checkpoint, resolve_named_file, resolve_recipe

DEMO_CHECKPOINT = bundled_checkpoint("resnet8-digits")


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
    parser.add_argument("--model", help="model name (default: what the checkpoint says)")
    if checkpoint:
        parser.add_argument("--checkpoint", required=True, help="checkpoint file (.th/.pt)")
    parser.add_argument(
        "--data", default="digits", help="digits | cifar10:DIR | imagefolder:DIR | npz:FILE"
    )
    parser.add_argument("--download", action="store_true", help="allow cifar10:DIR to download")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _quant_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--weight-bits", type=_bits, required=required)
    parser.add_argument("--act-bits", type=_bits, required=required)
    parser.add_argument(
        "--keep-8bit",
        default="",
        help="comma list of layers kept at 8 bits: first, last, or layer patterns",
    )
    parser.add_argument("--calib-samples", type=_positive_int, default=DEFAULT_CALIB_SAMPLES)
    parser.add_argument(
        "--method",
        default=None,
        help="auto (default) = adaround: min-max ranges at 8 bits, MSE ranges and learned "
        "rounding (AdaRound) below | minmax | percentile | mse (nearest rounding)",
    )
    parser.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales")
    parser.add_argument("--no-bias-correction", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="codesign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("eval", help="top-1 accuracy of a checkpoint")
    _common(p)

    p = sub.add_parser("ptq", help="post-training quantization")
    _common(p)
    _quant_args(p)

    p = sub.add_parser("qat", help="quantization-aware training (LSQ) from a float checkpoint")
    _common(p)
    _quant_args(p)
    p.add_argument("--epochs", type=int, default=8)
    # Folded BN leaves no normalisation: 0.002 diverged within 3 steps on ResNet-20 W4A4.
    p.add_argument("--lr", type=float, default=0.0002)
    p.add_argument("--batch-size", type=_positive_int, default=128)

    p = sub.add_parser("train", help="train a model from scratch (float)")
    _common(p, checkpoint=False)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=_positive_int, default=128)

    p = sub.add_parser("prune", help="prune (2:4 or a fraction), fine-tune, optionally quantize")
    _common(p)
    p.add_argument("--sparsity", required=True, help="N:M pattern (2:4) or a fraction (0.7)")
    p.add_argument("--scope", default="layer", choices=["layer", "global", "lamp"])
    p.add_argument("--schedule", default="oneshot", choices=["oneshot", "cubic"])
    # Fine-tuning defaults live in codesign.sparsity.finetune.DEFAULT_FINETUNE (None here
    # keeps the parser free of torch): 3 epochs, lr 0.01, batch 128, KD T=4 weight 0.7.
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default 3; 0: one-shot only)")
    p.add_argument("--lr", type=float, help="peak SGD learning rate, cosine (default 0.01)")
    p.add_argument("--batch-size", type=_positive_int, help="default 128")
    p.add_argument("--temperature", type=float, help="distillation T (default 4; 0: off)")
    p.add_argument("--distill-weight", type=float, help="KD share of the loss (default 0.7)")
    # Cubic timing defaults: codesign.sparsity.finetune.CubicTiming.
    p.add_argument("--prune-start", type=float, help="cubic: first update, fraction of the steps")
    p.add_argument("--prune-end", type=float, help="cubic: last update, fraction of the steps")
    p.add_argument("--prune-updates", type=_positive_int, help="cubic: mask updates per epoch")
    p.add_argument("--strict", action="store_true", help="error on layers N:M cannot divide")
    p.add_argument(
        "--permute",
        action="store_true",
        help="N:M: reorder input channels first so groups keep more magnitude (Pool & Yu 2021)",
    )
    p.add_argument(
        "--prune-method",
        default="magnitude",
        choices=PRUNE_METHODS,
        help="sparsegpt: masks by output error on --calib-samples training images, kept "
        "weights repaired (Frantar & Alistarh 2023; one-shot, layer scope)",
    )
    _quant_args(p, required=False)

    p = sub.add_parser("simulate", help="capture real tensors and simulate an accelerator")
    _common(p)
    p.add_argument("--samples", type=_positive_int, default=32, help="test images captured")
    p.add_argument(
        "--arch", required=True, help="bundled datapath name (scnn) or a hardware TOML path"
    )
    p.add_argument(
        "--energy", help="bundled energy table name (horowitz45, the default) or a TOML path"
    )

    p = sub.add_parser("run", help="run every variant of a recipe and write the report")
    p.add_argument("recipe", help="bundled recipe name (digits) or a recipe TOML path")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--data", help="replace the recipe's data source (e.g. imagefolder:DIR)")
    p.add_argument("--force", action="store_true", help="recompute variants already done")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("search", help="hardware-aware per-layer precision/sparsity search")
    p.add_argument("recipe", help="bundled recipe name or a recipe TOML path ([search] table)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--energy-budget-uj", type=float, help="energy per inference budget (uJ)")
    goal.add_argument("--accuracy-floor", type=float, help="lowest acceptable top-1 (%%)")
    p.add_argument("--data", help="replace the recipe's data source (e.g. imagefolder:DIR)")
    p.add_argument("--force", action="store_true", help="recompute cached variants and tables")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("demo", help="the main job on the embedded digits data")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--quiet", action="store_true")
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


def _finish(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    from codesign.io import write_json_atomic

    write_json_atomic(out / "result.json", result)
    print(json.dumps(result, indent=2))
    return result


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.data import evaluate, load_dataset
    from codesign.pipeline import load_model

    model, _, _ = load_model(args.checkpoint, args.model)
    dataset = load_dataset(args.data, args.download)
    result = evaluate(model, dataset.test)
    return _finish(args.out, {"top1": result["top1"], "samples": result["samples"]})


def cmd_ptq(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.data import load_dataset
    from codesign.pipeline import (
        layer_bits_rows,
        load_model,
        model_kwargs_for,
        run_ptq,
        save_model,
        top1,
    )

    spec = _quant_spec(args)
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    dataset = load_dataset(args.data, args.download)
    model, info = run_ptq(float_model, dataset, spec, args.calib_samples)
    result = {
        "fp32_top1": top1(float_model, dataset),
        "quant_top1": top1(model, dataset),
        "calib_seconds": info["calib_seconds"],
        "calib_samples": min(args.calib_samples, len(dataset.train)),
        "quant": spec.to_dict(),
        "layers": layer_bits_rows(model),
    }
    save_model(
        args.out / "model.pt",
        model,
        name,
        {**recipe, "quant": spec.to_dict()},
        model_kwargs_for(model),
    )
    return _finish(args.out, result)


def cmd_qat(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.config import TrainSpec
    from codesign.data import load_dataset
    from codesign.pipeline import (
        layer_bits_rows,
        load_model,
        model_kwargs_for,
        run_qat,
        save_model,
        top1,
    )

    spec = _quant_spec(args)
    train_spec = TrainSpec(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        distill_temperature=4.0,
        distill_weight=0.9,
        weight_decay=0.0,
    )
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    dataset = load_dataset(args.data, args.download)
    args.out.mkdir(parents=True, exist_ok=True)
    model, info = run_qat(
        float_model,
        dataset,
        spec,
        train_spec,
        args.calib_samples,
        state_path=args.out / "qat_state.pt",
        progress=not args.quiet,
    )
    result = {
        "fp32_top1": top1(float_model, dataset),
        "quant_top1": top1(model, dataset),
        "calib_seconds": info["calib_seconds"],
        "train_seconds": info["train_seconds"],
        "epochs": args.epochs,
        "quant": spec.to_dict(),
        "train": train_spec.to_dict(),
        "layers": layer_bits_rows(model),
    }
    save_model(
        args.out / "model.pt",
        model,
        name,
        {**recipe, "quant": spec.to_dict()},
        model_kwargs_for(model),
    )
    (args.out / "qat_state.pt").unlink(missing_ok=True)
    return _finish(args.out, result)


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from codesign.config import TrainSpec
    from codesign.data import load_dataset
    from codesign.models import create_model
    from codesign.pipeline import model_kwargs_for, save_model, top1
    from codesign.train import train

    if not args.model:
        raise ConfigError("train needs --model (see list_models())")
    dataset = load_dataset(args.data, args.download)
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
    """DEFAULT_FINETUNE with the options given on the command line."""
    from codesign.sparsity import DEFAULT_FINETUNE

    given = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "distill_temperature": args.temperature,
        "distill_weight": args.distill_weight,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    return dataclasses.replace(DEFAULT_FINETUNE, seed=args.seed, **changes)


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    import copy

    from codesign.config import SparsitySpec
    from codesign.data import load_dataset, make_forward_loop
    from codesign.pipeline import load_model, model_kwargs_for, run_ptq, save_model, top1
    from codesign.sparsity import CubicTiming, finetune_pruned, sparsity_report
    from codesign.sparsity.apply import prune_model_

    spec = SparsitySpec(
        sparsity=args.sparsity,
        scope=args.scope,
        schedule=args.schedule,
        strict=args.strict,
        permute=args.permute,
        method=args.prune_method,
    )
    if (args.weight_bits is None) != (args.act_bits is None):
        raise ConfigError("give both --weight-bits and --act-bits to quantize after pruning")
    train_spec = _prune_train_spec(args)
    if args.schedule == "cubic" and train_spec.epochs == 0:
        raise ConfigError("--schedule cubic prunes during fine-tuning: give --epochs >= 1")
    given = {
        "start_fraction": args.prune_start,
        "end_fraction": args.prune_end,
        "updates_per_epoch": args.prune_updates,
    }
    timing = CubicTiming(**{key: value for key, value in given.items() if value is not None})
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    dataset = load_dataset(args.data, args.download)
    model = copy.deepcopy(float_model)
    calibration = make_forward_loop(dataset.train, 256, args.calib_samples)
    # One-shot at the final level, evaluated before any fine-tuning.
    pruning_info = prune_model_(model, spec, calibration)
    result: dict[str, Any] = {
        "spec": spec.to_dict(),
        **pruning_info,
        "fp32_top1": top1(float_model, dataset),
        "oneshot_top1": top1(model, dataset),
    }
    train_seconds = train_cpu_seconds = 0.0
    if train_spec.epochs > 0:
        cpu_started = time.process_time()  # all threads: wall time hides contention
        history = finetune_pruned(
            model,
            spec,
            dataset,
            train_spec,
            teacher=float_model,
            timing=timing,
            progress=not args.quiet,
        )
        train_seconds = history["train_seconds"]
        train_cpu_seconds = time.process_time() - cpu_started
        result["train"] = train_spec.to_dict()
        if args.schedule == "cubic":
            result["cubic"] = dataclasses.asdict(timing)
    report = sparsity_report(model)
    result.update(
        {
            "pruned_top1": top1(model, dataset),
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
            "train_seconds": train_seconds,
            "train_cpu_seconds": train_cpu_seconds,
        }
    )
    new_recipe = {**recipe, "sparsity": spec.to_dict()}
    if args.weight_bits is not None:
        quant_spec = _quant_spec(args)
        model, info = run_ptq(model, dataset, quant_spec, args.calib_samples)
        result["quant_top1"] = top1(model, dataset)
        result["calib_seconds"] = info["calib_seconds"]
        new_recipe["quant"] = quant_spec.to_dict()
    save_model(args.out / "model.pt", model, name, new_recipe, model_kwargs_for(model))
    return _finish(args.out, result)


def cmd_simulate(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.data import load_dataset, make_forward_loop
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
    dataset = load_dataset(args.data, args.download)
    records = capture(model, make_forward_loop(dataset.test, 64, args.samples))
    costs = simulate(records, arch, energy)
    result = summarize(costs, arch_path.stem)
    result["samples"] = min(args.samples, len(dataset.test))
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
