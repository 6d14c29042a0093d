"""codesign: quantization/sparsity co-design of DNN accelerators on measured tensors.

The public API: models (``create_model``, ``list_models``, ``load_model``), data
(``load_dataset``, ``make_forward_loop``, ``evaluate``), quantization (``quantize_``,
``calibrate``, ``integer_model`` for integer-only inference), pruning (``prune_``,
``sparsity_report``), specs (``QuantSpec``, ``SparsitySpec``, ``TrainSpec``) and where work
runs (``Runtime``, ``make_runtime``).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codesign.config import LayerOverride, QuantSpec, SparsitySpec, TrainSpec
    from codesign.data import evaluate, load_dataset, make_forward_loop
    from codesign.errors import CodesignError
    from codesign.models import create_model, list_models
    from codesign.pipeline import load_model
    from codesign.quant import calibrate, integer_model, quantize_
    from codesign.runtime import Runtime, make_runtime
    from codesign.sparsity import prune_, sparsity_report

# Imported on first use (PEP 562), so that ``import codesign.launch`` stays light: the
# command-line launcher must be able to answer Ctrl-C during the heavy torch import.
_SOURCES = {
    "LayerOverride": "codesign.config",
    "QuantSpec": "codesign.config",
    "SparsitySpec": "codesign.config",
    "TrainSpec": "codesign.config",
    "evaluate": "codesign.data",
    "load_dataset": "codesign.data",
    "make_forward_loop": "codesign.data",
    "CodesignError": "codesign.errors",
    "create_model": "codesign.models",
    "list_models": "codesign.models",
    "load_model": "codesign.pipeline",
    "calibrate": "codesign.quant",
    "integer_model": "codesign.quant",
    "quantize_": "codesign.quant",
    "Runtime": "codesign.runtime",
    "make_runtime": "codesign.runtime",
    "prune_": "codesign.sparsity",
    "sparsity_report": "codesign.sparsity",
}


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'codesign' has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])


__version__ = "0.1.0"

__all__ = [
    "CodesignError",
    "LayerOverride",
    "QuantSpec",
    "Runtime",
    "SparsitySpec",
    "TrainSpec",
    "calibrate",
    "create_model",
    "evaluate",
    "integer_model",
    "list_models",
    "load_dataset",
    "load_model",
    "make_forward_loop",
    "make_runtime",
    "prune_",
    "quantize_",
    "sparsity_report",
]
