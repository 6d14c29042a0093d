"""The single steps on a checkpoint: eval, ptq, qat, prune; and train from scratch.

Each builds its specs from the flags and runs them through the same pipeline steps a recipe
variant runs, then writes ``OUT/result.json`` (and ``OUT/model.pt`` with its recipe). Under
``torchrun`` (qat, prune, train) every rank runs the command, training is data-parallel, and
rank 0 alone writes.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from codesign.cli import specs
from codesign.cli.common import finish, load_data, load_data_for, start_runtime, subsets
from codesign.errors import ConfigError


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.data import evaluate
    from codesign.pipeline import load_model

    runtime = start_runtime(args)
    model, _, _ = load_model(args.checkpoint, args.model)
    if args.integer:
        return _eval_integer(args, model, runtime)
    model.to(runtime.torch_device)
    dataset = load_data_for(args, model)
    result = evaluate(model, dataset.test)
    top1 = {"top1": float(result["top1"]), "samples": result["samples"]}
    return finish(args.out, top1, len(dataset.test), args.seed, runtime)


def _eval_integer(args: argparse.Namespace, model: Any, runtime: Any) -> dict[str, Any]:
    """``eval --integer``: top-1 of the integer-only model, beside the fake-quant model's and
    the fraction of test images whose predicted class agrees; both run where the checkpoint
    was loaded (the CPU)."""
    from codesign.data import logits_of
    from codesign.quant import quant_layers
    from codesign.quant.integer import accumulator_widths, integer_model

    if not quant_layers(model):
        raise ConfigError(
            f"{args.checkpoint} is a float model: --integer needs a quantized checkpoint "
            "(codesign ptq / qat / prune with bit widths)"
        )
    integer = integer_model(model)  # refuses what integers cannot run, before any data
    dataset = load_data(args, model)
    labels = dataset.test.labels
    fake = logits_of(model, dataset.test).argmax(1)
    exact = logits_of(integer, dataset.test).argmax(1)
    samples = len(labels)
    result = {
        "top1": 100.0 * int((exact == labels).sum()) / samples,
        "integer": True,
        "samples": samples,
        "fake_quant_top1": 100.0 * int((fake == labels).sum()) / samples,
        "agreement": float((fake == exact).float().mean()),
        "accumulators": accumulator_widths(integer),
    }
    return finish(args.out, result, samples, args.seed, runtime)


def _build(
    args: argparse.Namespace,
    float_model: Any,
    dataset: Any,
    steps: tuple[Any, ...],
    runtime: Any,
) -> tuple[Any, Any]:
    """Run a variant's steps exactly as a recipe variant runs them, recording test top-1
    after each step; resumable training state lives in ``--out``."""
    from codesign import distributed
    from codesign.pipeline import BuildContext, build

    if runtime.is_writer:
        args.out.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    ctx = BuildContext(
        float_model,
        dataset,
        seed=args.seed,
        calib_samples=args.calib_samples,
        state_dir=args.out,
        progress=not args.quiet,
        evaluate_steps=True,
        runtime=runtime,
    )
    model, info = build(ctx, steps)
    distributed.write_rank_digest(model, args.command, runtime.rank, os.environ)
    return model, info


def _save(
    args: argparse.Namespace, model: Any, name: str, recipe: dict[str, Any], runtime: Any
) -> None:
    """``OUT/model.pt`` with its recipe, the resumable states removed (rank 0 only)."""
    from codesign import distributed
    from codesign.pipeline import model_kwargs_for, save_model

    if runtime.is_writer:
        save_model(args.out / "model.pt", model, name, recipe, model_kwargs_for(model))
        stages = [path.name for path in args.out.glob("qat_state.stage*.pt")]
        for state in ("qat_state.pt", "finetune_state.pt", *stages):
            (args.out / state).unlink(missing_ok=True)
    distributed.barrier()


def cmd_ptq(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.pipeline import layer_bits_rows, load_model, top1, variant_steps

    runtime = start_runtime(args)
    spec = specs.quant_spec(args)
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    steps = variant_steps(quant=spec)
    dataset = load_data_for(args, float_model, steps)
    model, info = _build(args, float_model, dataset, steps, runtime)
    result = {
        "fp32_top1": top1(float_model, dataset),
        "quant_top1": info.step_top1["ptq"],
        "calib_seconds": info.calib_seconds,
        "calib_samples": info.subsets["calibration"]["size"],
        "subsets": subsets(dataset, info),
        "quant": spec.to_dict(),
        "layers": layer_bits_rows(model),
    }
    if info.method_choice is not None:
        result["method_choice"] = info.method_choice
    _save(args, model, name, {**recipe, "quant": spec.to_dict()}, runtime)
    return finish(args.out, result, len(dataset.test), args.seed, runtime)


def cmd_qat(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.pipeline import layer_bits_rows, load_model, top1, variant_steps

    runtime = start_runtime(args)
    spec = specs.quant_spec(args)
    train_spec = specs.qat_train_spec(args)
    float_model, name, recipe = load_model(args.checkpoint, args.model)
    steps = variant_steps(quant=spec, qat=train_spec)
    dataset = load_data_for(args, float_model, steps)
    model, info = _build(args, float_model, dataset, steps, runtime)
    result = {
        "fp32_top1": top1(float_model, dataset),
        "ptq_top1": info.step_top1["ptq"],
        "quant_top1": info.step_top1["qat"],
        "calib_seconds": info.calib_seconds,
        "train_seconds": info.train_seconds,
        "subsets": subsets(dataset, info),
        "epochs": train_spec.total_epochs,
        "quant": spec.to_dict(),
        "train": train_spec.to_dict(),
        "layers": layer_bits_rows(model),
    }
    _save(args, model, name, {**recipe, "quant": spec.to_dict()}, runtime)
    return finish(args.out, result, len(dataset.test), args.seed, runtime)


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from codesign import distributed
    from codesign.config import TrainSpec
    from codesign.models import create_model, list_models
    from codesign.pipeline import model_kwargs_for, save_model, top1
    from codesign.train import train

    if not args.model:
        raise ConfigError("train needs --model (see list_models())")
    runtime = start_runtime(args)
    spec = TrainSpec(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    if args.model not in list_models():
        create_model(args.model)  # raises the unknown-name error, before the data loads
    dataset = load_data(args)
    torch.manual_seed(args.seed)
    kwargs = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
    model = create_model(args.model, **kwargs)
    if runtime.is_writer:
        args.out.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    history = train(
        model,
        dataset,
        spec,
        state_path=args.out / "train_state.pt",
        progress=not args.quiet,
        runtime=runtime,
    )
    distributed.write_rank_digest(model, args.command, runtime.rank, os.environ)
    result = {
        "top1": top1(model, dataset),
        "train_seconds": history["train_seconds"],
        "train": spec.to_dict(),
    }
    if runtime.is_writer:
        recipe = {"train": spec.to_dict()}
        save_model(args.out / "model.pt", model, args.model, recipe, model_kwargs_for(model))
        (args.out / "train_state.pt").unlink(missing_ok=True)
    distributed.barrier()
    return finish(args.out, result, len(dataset.test), args.seed, runtime)


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.pipeline import load_model, top1, variant_steps
    from codesign.sparsity import sparsity_report

    runtime = start_runtime(args)
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
    model, info = _build(args, float_model, dataset, steps, runtime)
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
    _save(args, model, name, new_recipe, runtime)
    return finish(args.out, result, len(dataset.test), args.seed, runtime)
