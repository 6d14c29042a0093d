"""codesign: quantization/sparsity co-design of DNN accelerators on measured tensors.

The public API: models (``create_model``, ``list_models``, ``load_model``), data
(``load_dataset``, ``make_forward_loop``, ``evaluate``), quantization (``quantize_``,
``calibrate``, ``integer_model`` for integer-only inference), pruning (``prune_``,
``sparsity_report``), specs (``QuantSpec``, ``SparsitySpec``, ``TrainSpec``) and where work
runs (``Runtime``, ``make_runtime``).
"""

from codesign.config import LayerOverride, QuantSpec, SparsitySpec, TrainSpec
from codesign.data import evaluate, load_dataset, make_forward_loop
from codesign.errors import CodesignError
from codesign.models import create_model, list_models
from codesign.pipeline import load_model
from codesign.quant import calibrate, integer_model, quantize_
from codesign.runtime import Runtime, make_runtime
from codesign.sparsity import prune_, sparsity_report

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
