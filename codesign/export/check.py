"""Checked, not hoped: the exported ONNX model run in onnxruntime beside the PyTorch model.

Both see the same images; the check reports each one's top-1, the fraction of images whose
predicted class agrees, and the largest absolute difference between their logits.
onnxruntime runs the CPU provider with its default graph optimisations (QDQ node groups fused
into integer kernels where it can), which is what a deployment runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from codesign.data import batches, logits_of
from codesign.data.datasets import Split
from codesign.export.onnx_graph import INPUT_NAME


def onnx_logits(model_bytes: bytes, split: Split, batch_size: int = 256) -> torch.Tensor:
    """The ONNX model's outputs on every image of ``split``, in split order: [N, classes]."""
    import onnxruntime

    runner = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    outputs = []
    for images, _ in batches(split, batch_size):
        feed = {INPUT_NAME: images.detach().to("cpu", torch.float32).numpy()}
        outputs.append(torch.from_numpy(np.asarray(runner.run(None, feed)[0])))
    return torch.cat(outputs)


def compare(model: nn.Module, model_bytes: bytes, split: Split) -> dict[str, Any]:
    """``onnx_top1`` and ``torch_top1`` (% of ``split``), ``agreement`` (fraction 0..1 of
    images with the same predicted class), ``max_abs_logit_diff`` and ``samples``."""
    reference = logits_of(model, split).to("cpu", torch.float32)
    exported = onnx_logits(model_bytes, split)
    labels = split.labels.to("cpu")
    ours, theirs = exported.argmax(1), reference.argmax(1)
    samples = len(labels)
    return {
        "onnx_top1": 100.0 * int((ours == labels).sum()) / samples,
        "torch_top1": 100.0 * int((theirs == labels).sum()) / samples,
        "agreement": int((ours == theirs).sum()) / samples,
        "max_abs_logit_diff": float((exported - reference).abs().max()),
        "samples": samples,
    }
