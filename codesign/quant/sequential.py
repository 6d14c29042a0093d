"""Layer-wise solvers' data: each target layer's inputs, with the layers before it already
solved, at a cost linear in depth.

AdaRound, SparseGPT and GPTQ change one layer at a time and want the next layer's input as the
changed network produces it. Re-running the network from the image for every layer costs
L(L+1)/2 layer evaluations; here the calibration batches are pushed through the network once,
node by node of its torch.fx graph, with every Conv2d/Linear kept as a leaf: before a target
layer runs, its input (one tensor per batch) is handed to the solver, which may change the
layer; then the layer runs on it and propagation continues. Each layer (and each add, pool,
reshape) runs once per batch. Only the values still needed later are kept (the main path and
the pending residual of a ResNet block), each for the whole calibration set, because a layer's
solve needs all of its inputs before any batch may move past it.

The arithmetic per batch is the eager forward's, op for op, so the inputs equal, bit for bit,
what a forward hook sees when the whole prefix is re-run (``tests/test_sequential.py``
checks the solvers' answers both ways). A model torch.fx cannot trace (data-dependent control
flow) falls back to that re-run, with a warning, since it is quadratic in depth.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from typing import Any

import torch
from torch import fx, nn

from codesign.data.loops import ForwardLoop
from codesign.models.residual import ResidualAdd

# QuantConv2d/QuantLinear subclass the layers; QuantAdd subclasses ResidualAdd, whose
# operand quantizers (observers with data-dependent branches) fx could not trace through.
LEAF_TYPES = (nn.Conv2d, nn.Linear, ResidualAdd)

# The positional and keyword arguments of one ``model(...)`` call of a forward loop.
Batch = tuple[tuple[Any, ...], dict[str, Any]]
# Called by a layer-wise solver after each layer: (layer name, seconds spent on it).
LayerTimer = Callable[[str, float], None]


def finish_unit(
    report: dict[str, dict[str, float]],
    name: str,
    errors: dict[str, float],
    data_seconds: float,
    started: float,
    on_layer: LayerTimer | None,
) -> float:
    """Record a solved layer or block in ``report`` (its errors, the seconds spent gathering
    its inputs and in all since ``started``), tell ``on_layer``; returns the clock now, when
    the next unit starts."""
    report[name] = {
        **errors,
        "data_seconds": data_seconds,
        "seconds": time.perf_counter() - started,
    }
    if on_layer is not None:
        on_layer(name, report[name]["seconds"])
    return time.perf_counter()


class PropagationWarning(UserWarning):
    """The model could not be traced, so each layer re-runs the network prefix."""


class _Recorder(nn.Module):
    """Stands in for the model inside a forward loop and keeps each call's arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Batch] = []

    def forward(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))


def record_batches(forward_loop: ForwardLoop) -> list[Batch]:
    """The inputs ``forward_loop`` feeds a model, one (args, kwargs) per call (e.g. one images
    tensor [B, C, H, W] per batch). The loop's own batching is kept, so every layer later sees
    the same batches the eager forward would."""
    recorder = _Recorder()
    forward_loop(recorder)
    return recorder.calls


class _LayerTracer(fx.Tracer):
    """torch.fx tracer that stops at Conv2d/Linear (quantized twins included): their
    parametrizations and input quantizers run as the module itself, not as traced ops; also
    at the modules named in ``leaf_names`` (whole residual blocks for block-wise solvers)."""

    def __init__(self, leaf_names: Collection[str] = ()) -> None:
        super().__init__()
        self.leaf_names = frozenset(leaf_names)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            isinstance(m, LEAF_TYPES)
            or module_qualified_name in self.leaf_names
            or super().is_leaf_module(m, module_qualified_name)
        )


def trace_layers(model: nn.Module, leaf_names: Collection[str] = ()) -> fx.Graph:
    """The fx graph of ``model`` with every Conv2d/Linear, and every module named in
    ``leaf_names``, as one ``call_module`` node."""
    return _LayerTracer(leaf_names).trace(model)


def _last_uses(graph: fx.Graph) -> dict[fx.Node, list[fx.Node]]:
    """For each node, the values whose last reader it is (freed once it has run)."""
    last_reader: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        for source in node.all_input_nodes:
            last_reader[source] = node
    freed: dict[fx.Node, list[fx.Node]] = {}
    for source, reader in last_reader.items():
        freed.setdefault(reader, []).append(source)
    return freed


def _placeholder_values(model: nn.Module, graph: fx.Graph, batch: Batch) -> dict[str, Any]:
    """Each placeholder's value for one call, bound the way Python binds ``model(...)``."""
    bound = inspect.signature(model.forward).bind(*batch[0], **batch[1])
    bound.apply_defaults()
    return {name.lstrip("*"): value for name, value in bound.arguments.items()}


def _run_node(model: nn.Module, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    args = fx.node.map_arg(node.args, env.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
    if node.op == "call_module":
        return model.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)  # type: ignore[operator]
    if node.op == "call_method":
        receiver, *rest = args
        return getattr(receiver, str(node.target))(*rest, **kwargs)
    if node.op == "get_attr":
        value: Any = model
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return value
    raise ValueError(f"unexpected fx node {node.op}")


def _propagated(
    model: nn.Module, graph: fx.Graph, targets: set[str], batches: list[Batch]
) -> Iterator[tuple[str, list[torch.Tensor]]]:
    envs: list[dict[fx.Node, Any]] = [{} for _ in batches]
    bound = [_placeholder_values(model, graph, batch) for batch in batches]
    freed = _last_uses(graph)
    for node in graph.nodes:
        if node.op == "output":
            break
        if node.op == "call_module" and str(node.target) in targets:
            yield str(node.target), [env[node.args[0]] for env in envs]  # type: ignore[index]
        for env, values in zip(envs, bound, strict=True):
            if node.op == "placeholder":
                env[node] = values.get(str(node.target).lstrip("*"))
            else:
                # Local to each node: the caller's grad mode between yields stays its own.
                with torch.no_grad():
                    env[node] = _run_node(model, node, env)
            for source in freed.get(node, ()):
                del env[source]


class _StopForward(Exception):
    """Raised by a capture hook once the layer of interest has seen its input."""


def rerun_inputs(model: nn.Module, name: str, batches: list[Batch]) -> list[torch.Tensor]:
    """The input of layer ``name`` for every batch, by running the network from its input up
    to that layer (what a model that cannot be traced needs; quadratic when done per layer)."""
    captured: list[torch.Tensor] = []

    def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0].detach())
        raise _StopForward

    handle = model.get_submodule(name).register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for args, kwargs in batches:
                with contextlib.suppress(_StopForward):
                    model(*args, **kwargs)
    finally:
        handle.remove()
    return captured


def _rerun(
    model: nn.Module, names: list[str], batches: list[Batch]
) -> Iterator[tuple[str, list[torch.Tensor]]]:
    for name in names:
        yield name, rerun_inputs(model, name, batches)


def layer_inputs(
    model: nn.Module, names: list[str], batches: list[Batch]
) -> Iterator[tuple[str, list[torch.Tensor]]]:
    """Yield ``(name, inputs)`` for each layer of ``names`` in the order the forward runs
    them; ``inputs`` holds the layer's input tensor for each of ``batches`` (see
    :func:`record_batches`), computed with every change the caller made to earlier layers
    before resuming. Each layer runs once per batch; a layer the forward never calls comes
    last with no inputs. A model fx cannot trace, or one calling a target layer twice, falls
    back to re-running the prefix per layer (``PropagationWarning``), in the order given.
    ``names`` may also name whole modules taking one tensor (residual blocks): each is traced
    as one node and paused before like a layer.
    """
    targets = set(names)
    try:
        graph = trace_layers(model, targets)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...) on Python code
        reason = f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {exc})"
        graph = None
    if graph is not None:
        called = [str(n.target) for n in graph.nodes if n.op == "call_module"]
        repeated = sorted(t for t in targets if called.count(t) > 1)
        if repeated:
            reason = f"layers called more than once per forward: {repeated[:3]}"
            graph = None
    if graph is None:
        warnings.warn(
            f"{reason}; every layer re-runs the network up to it (cost quadratic in depth)",
            PropagationWarning,
            stacklevel=2,
        )
        yield from _rerun(model, names, batches)
        return
    seen = set()
    for name, inputs in _propagated(model, graph, targets, batches):
        seen.add(name)
        yield name, inputs
    for name in names:
        if name not in seen:
            yield name, []
