"""The single steps on a checkpoint: eval, ptq, qat, prune; and train from scratch.

Each builds its specs from the flags and runs them through the same pipeline steps a recipe
variant runs, then writes ``OUT/result.json`` (and ``OUT/model.pt`` with its recipe).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from codesign.cli import specs
from codesign.cli.common import finish, load_data, load_data_for, subsets
from codesign.errors import ConfigError


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.data import evaluate
    from codesign.pipeline import load_model

    model, _, _ = load_model(args.checkpoint, args.model)
    dataset = load_data_for(args, model)
    result = evaluate(model, dataset.test)
    top1 = {"top1": float(result["top1"]), "samples": result["samples"]}
    return finish(args.out, top1, len(dataset.test), args.seed)


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

    spec = specs.quant_spec(args)
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    steps = variant_steps(quant=spec)
    dataset = load_data_for(args, float_model, steps)
    model, info = _build(args, float_model, dataset, steps)
    result = {
        "fp32_top1": top1(float_model, dataset),
        "quant_top1": info.step_top1["ptq"],
        "calib_seconds": info.calib_seconds,
        "calib_samples": info.subsets["calibration"]["size"],
        "subsets": subsets(dataset, info),
        "quant": spec.to_dict(),
        "layers": layer_bits_rows(model),
    }
    _save(args, model, name, {**recipe, "quant": spec.to_dict()})
    return finish(args.out, result, len(dataset.test), args.seed)


def cmd_qat(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.pipeline import layer_bits_rows, load_model, top1, variant_steps

    spec = specs.quant_spec(args)
    train_spec = specs.qat_train_spec(args)
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    steps = variant_steps(quant=spec, qat=train_spec)
    dataset = load_data_for(args, float_model, steps)
    model, info = _build(args, float_model, dataset, steps)
    result = {
        "fp32_top1": top1(float_model, dataset),
        "ptq_top1": info.step_top1["ptq"],
        "quant_top1": info.step_top1["qat"],
        "calib_seconds": info.calib_seconds,
        "train_seconds": info.train_seconds,
        "subsets": subsets(dataset, info),
        "epochs": train_spec.epochs,
        "quant": spec.to_dict(),
        "train": train_spec.to_dict(),
        "layers": layer_bits_rows(model),
    }
    _save(args, model, name, {**recipe, "quant": spec.to_dict()})
    return finish(args.out, result, len(dataset.test), args.seed)


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from codesign.config import TrainSpec
    from codesign.models import create_model, list_models
    from codesign.pipeline import model_kwargs_for, save_model, top1
    from codesign.train import train

    if not args.model:
        raise ConfigError("train needs --model (see list_models())")
    spec = TrainSpec(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    if args.model not in list_models():
        create_model(args.model)  # raises the unknown-name error, before the data loads
    dataset = load_data(args)
    torch.manual_seed(args.seed)
    kwargs = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
    model = create_model(args.model, **kwargs)
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
    return finish(args.out, result, len(dataset.test), args.seed)


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.pipeline import load_model, top1, variant_steps
    from codesign.sparsity import sparsity_report

    spec = specs.sparsity_spec(args)
    if (args.weight_bits is None) != (args.act_bits is None):
        raise ConfigError("give both --weight-bits and --act-bits to quantize after pruning")
    train_spec = specs.prune_train_spec(args)
    if args.schedule == "cubic" and train_spec.epochs == 0:
        raise ConfigError("--schedule cubic prunes during fine-tuning: give --epochs >= 1")
    quant_spec = specs.quant_spec(args) if args.weight_bits is not None else None
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    steps = variant_steps(sparsity=spec, finetune=train_spec, quant=quant_spec)
    dataset = load_data_for(args, float_model, steps)
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
            "subsets": subsets(dataset, info),
        }
    )
    new_recipe = {**recipe, "sparsity": spec.to_dict()}
    if quant_spec is not None:
        result["quant_top1"] = info.step_top1["ptq"]
        result["calib_seconds"] = info.calib_seconds
        new_recipe["quant"] = quant_spec.to_dict()
    _save(args, model, name, new_recipe)
    return finish(args.out, result, len(dataset.test), args.seed)
