"""The dataflow graph of a quantized model, as the lowerings to integer ops and to ONNX read it.

torch.fx traces the model with the quantized layers, the residual sums and the parameter-free
shortcuts kept whole (leaf modules), so each appears as one ``call_module`` node whose module
holds its quantizers and integer codes; everything between them (ReLU, pooling, flatten) is
an ordinary torch node. The lowerings walk these nodes in order and refuse any they cannot
express exactly, naming it.
"""

from __future__ import annotations

from torch import fx, nn

from codesign.errors import QuantError
from codesign.models.cifar_resnet import PadShortcut
from codesign.models.residual import ResidualAdd
from codesign.quant.modules import QUANT_LAYERS

LEAF_MODULES = (*QUANT_LAYERS, ResidualAdd, PadShortcut)


class _QuantTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, LEAF_MODULES) or super().is_leaf_module(m, module_qualified_name)


def trace_quantized(model: nn.Module) -> fx.Graph:
    """The fx graph of ``model`` with quantized layers, residual sums and shortcuts as leaves."""
    try:
        return _QuantTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise QuantError(
            f"cannot trace {type(model).__name__} into a dataflow graph ({exc}); integer "
            "inference and ONNX export need a model torch.fx can trace"
        ) from None


def node_module(model: nn.Module, node: fx.Node) -> nn.Module:
    """The module a ``call_module`` node calls."""
    return model.get_submodule(str(node.target))


def unsupported(node: fx.Node, what: str, model: nn.Module | None = None) -> QuantError:
    """The one-line error for a graph node a lowering cannot express."""
    kind = (
        type(node_module(model, node)).__name__
        if model is not None and node.op == "call_module"
        else str(node.target)
    )
    return QuantError(f"{what}: node {node.name} ({node.op} {kind}) is not supported")
