"""``codesign export``: a quantized checkpoint as a deployable model, checked on the test split."""

from __future__ import annotations

import argparse
from typing import Any

from codesign.cli.common import finish, load_data, start_runtime
from codesign.errors import ConfigError


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.export import export_onnx, require_onnx
    from codesign.pipeline import load_model
    from codesign.quant import quant_layers

    require_onnx()  # before any work: a missing extra never costs a load
    runtime = start_runtime(args)
    # The ONNX graph is built and checked on the CPU, where onnxruntime runs it.
    model, _, _ = load_model(args.checkpoint, args.model)
    if not quant_layers(model):
        raise ConfigError(
            f"{args.checkpoint}: the model is not quantized; export a checkpoint of "
            "codesign ptq / qat / prune with bit widths"
        )
    dataset = load_data(args, model)
    args.out.mkdir(parents=True, exist_ok=True)
    result = export_onnx(model, args.out, dataset.test)
    result["format"] = args.format
    return finish(args.out, result, len(dataset.test), args.seed, runtime)
