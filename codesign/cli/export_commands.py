"""``codesign export``: a quantized checkpoint as a deployable model, checked on the test split."""

from __future__ import annotations

import argparse
from typing import Any

from codesign.cli.common import finish, load_data


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.export import export_onnx, require_onnx
    from codesign.export.onnx_graph import to_onnx
    from codesign.pipeline import load_model

    require_onnx()  # before any work: a missing extra never costs a load
    model, _, _ = load_model(args.checkpoint, args.model)
    dataset = load_data(args)
    to_onnx(model, tuple(dataset.test.images.shape[1:]))  # refuses a float model before any run
    args.out.mkdir(parents=True, exist_ok=True)
    result = export_onnx(model, args.out, dataset.test)
    result["format"] = args.format
    return finish(args.out, result, len(dataset.test), args.seed)
