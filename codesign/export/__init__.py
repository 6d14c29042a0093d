"""Deployable results: a quantized model as an ONNX QDQ graph, checked in onnxruntime.

``onnx`` and ``onnxruntime`` are the ``export`` extra (``pip install 'codesign[export]'``);
:func:`require_onnx` says so in one line, before any work starts, when they are missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from codesign.data.datasets import Split
from codesign.errors import ConfigError

EXTRA_HINT = "pip install 'codesign[export]'"


def require_onnx() -> None:
    """Raise a one-line :class:`ConfigError` naming the extra when onnx/onnxruntime are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        missing = exc.name or "onnx/onnxruntime"
        raise ConfigError(
            f"ONNX export needs onnx and onnxruntime ({missing} is not installed): {EXTRA_HINT}"
        ) from None


def export_onnx(
    model: nn.Module, out: Path, check_split: Split, name: str = "model.onnx"
) -> dict[str, Any]:
    """Write ``out/name``: the quantized ``model`` as an ONNX QDQ graph (opset 21) that
    ``onnx.checker`` accepts, once onnxruntime has run it on ``check_split`` beside the PyTorch
    model. Returns the check (:func:`codesign.export.check.compare`) with ``onnx`` (the file
    name), ``opset``, how many layers store their weight codes in each ONNX type, and how
    many residual sums the model has and how many of them are quantized."""
    import onnx

    from codesign.export.check import compare
    from codesign.export.onnx_graph import OPSET, storage_types, to_onnx
    from codesign.io import write_bytes_atomic
    from codesign.models.residual import ResidualAdd
    from codesign.quant.ptq import quant_adds

    proto = to_onnx(model, tuple(check_split.images.shape[1:]))
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    check = compare(model, data, check_split)
    write_bytes_atomic(Path(out) / name, data)
    return {
        "onnx": name,
        **check,
        "opset": OPSET,
        "weight_storage": storage_types(proto),
        "residual_sums": sum(isinstance(m, ResidualAdd) for m in model.modules()),
        "residual_sums_quantized": len(quant_adds(model)),
    }


__all__ = ["EXTRA_HINT", "export_onnx", "require_onnx"]
