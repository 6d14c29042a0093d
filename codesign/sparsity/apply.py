"""``prune_model_``: everything a ``SparsitySpec`` asks for before fine-tuning, in order.

1. ``permute``: N:M channel permutation on the dense model (``permutation.py``);
2. masks: by magnitude (``prune_``), or by SparseGPT on calibration inputs (``obs.py``).

`codesign prune`, recipe variants and ``scripts/compare_pruning.py`` all prune through here,
so one spec means the same model everywhere.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from codesign.config import SparsitySpec
from codesign.data.loops import ForwardLoop
from codesign.errors import SparsityError
from codesign.sparsity.obs import sparsegpt_prune_
from codesign.sparsity.permutation import permute_for_spec_
from codesign.sparsity.prune import prune_


def prune_model_(
    model: nn.Module, spec: SparsitySpec, calibration: ForwardLoop | None = None
) -> dict[str, Any]:
    """Prune the dense ``model`` in place as ``spec`` says; returns what was measured on the
    way: ``"permutation"`` (kept magnitude before/after) and ``"sparsegpt"`` (per-layer
    relative output errors), each only when the spec asks for it.

    ``calibration`` feeds training images through the model; SparseGPT needs it.
    """
    if spec.method == "sparsegpt" and calibration is None:
        raise SparsityError("method 'sparsegpt' needs calibration images (a forward loop)")
    info: dict[str, Any] = {}
    permutation = permute_for_spec_(model, spec)
    if permutation:
        info["permutation"] = permutation
    if spec.method == "sparsegpt":
        assert calibration is not None
        info["sparsegpt"] = sparsegpt_prune_(model, spec, calibration)
    else:
        prune_(model, spec)
    return info
