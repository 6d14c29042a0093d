"""A quantized model as an ONNX graph in the QDQ form (QuantizeLinear/DequantizeLinear pairs).

The graph is written node by node with ``onnx.helper`` from the model's fx graph
(:func:`codesign.quant.graph.trace_quantized`) rather than by ``torch.onnx.export``: the
TorchScript exporter stops at opset 20 and lowers fake quantization only for 8-bit ranges
((-128, 127), (0, 255)), and the dynamo exporter needs ``onnxscript``; neither stores the
model's integer weight codes as initializers (they export float weights). Writing the graph
directly stores exactly what the model computes with:

- weights: the integer codes of each layer (``integer_weight``: masks applied, so pruned
  zeros are exact zeros) as INT8 initializers, or as the ONNX INT4 type for weights of 4 bits
  or fewer (opset 21; onnxruntime runs it), each with its per-output-channel scale
  (``DequantizeLinear`` on axis 0) or its one scale per tensor, zero point 0;
- biases: int32 codes on the accumulator grid ``s_x * s_w[k]``, dequantized per channel, as
  the model adds them (``quantize_bias``, the default; the QDQ convention); a model that adds
  its bias in float gets a float bias;
- activations: ``QuantizeLinear`` -> ``DequantizeLinear`` with the quantizer's scale and zero
  point 0, UINT8 where calibration saw no negative value, else INT8 (UINT4/INT4 at 4 bits);
  other widths below 8 are clipped to their grid first (``Clip``), then stored in 8 bits;
- the residual sums: each operand through its own Q/DQ pair (the model's ``QuantAdd``
  quantizers), then ``Add``; a model quantized with ``residual_bits = 0`` adds floats, and so
  does its graph;
- BN is already folded into the convolutions by quantization (``fold_bn``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from codesign.errors import QuantError
from codesign.models.cifar_resnet import PadShortcut
from codesign.models.residual import ResidualAdd
from codesign.quant.graph import node_module, trace_quantized, unsupported
from codesign.quant.modules import QUANT_LAYERS, QuantAdd
from codesign.quant.quantizers import ActQuantizer

if TYPE_CHECKING:
    import onnx

OPSET = 21  # the first opset whose QuantizeLinear/DequantizeLinear take INT4/UINT4
IR_VERSION = 10  # what opset 21 needs; onnxruntime >= 1.20 reads it
INPUT_NAME, OUTPUT_NAME = "input", "logits"
_WHAT = "ONNX export"
_INT64_MAX = np.iinfo(np.int64).max


class _GraphWriter:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.numpy_helper, self.types = helper, numpy_helper, TensorProto
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()

    def name(self, base: str) -> str:
        name, index = base, 1
        while name in self._names:
            index += 1
            name = f"{base}_{index}"
        self._names.add(name)
        return name

    def constant(self, base: str, array: np.ndarray) -> str:
        name = self.name(base)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def integer_constant(self, base: str, codes: np.ndarray, onnx_type: int) -> str:
        """Integer codes stored as ``onnx_type`` (INT4/UINT4 packed two per byte by onnx)."""
        name = self.name(base)
        tensor = self.helper.make_tensor(name, onnx_type, codes.shape, codes.flatten().tolist())
        self.initializers.append(tensor)
        return name

    def node(self, op: str, inputs: list[str], base: str, **attributes: Any) -> str:
        output = self.name(base)
        self.nodes.append(
            self.helper.make_node(
                op, inputs, [output], name=self.name(f"{base}/{op}"), **attributes
            )
        )
        return output


def _code_type(writer: _GraphWriter, bits: int, signed: bool) -> int:
    """The ONNX element type that holds a ``bits``-wide code: 4-bit types up to 4 bits."""
    types = writer.types
    if bits <= 4:
        return types.INT4 if signed else types.UINT4
    return types.INT8 if signed else types.UINT8


def _quantize_activation(
    writer: _GraphWriter, value: str, quantizer: ActQuantizer, base: str
) -> str:
    """``value`` -> QuantizeLinear -> DequantizeLinear on the quantizer's grid (zero point 0)."""
    qmin, qmax = quantizer.qrange
    signed = bool(quantizer.signed)
    onnx_type = _code_type(writer, quantizer.bits, signed)
    scale = np.float32(float(quantizer.scale))
    if quantizer.bits not in (4, 8):
        # A 2..7-bit grid inside a 4- or 8-bit container: clip to it first, so saturation is
        # the quantizer's, not the container's (inside the range Clip changes nothing).
        low = writer.constant(f"{base}.clip_min", np.array(qmin * scale, np.float32))
        high = writer.constant(f"{base}.clip_max", np.array(qmax * scale, np.float32))
        value = writer.node("Clip", [value, low, high], f"{base}.clipped")
    scale_name = writer.constant(f"{base}.scale", np.array(scale, np.float32))
    zero = writer.integer_constant(f"{base}.zero_point", np.zeros((), np.int64), onnx_type)
    codes = writer.node("QuantizeLinear", [value, scale_name, zero], f"{base}.codes")
    return writer.node("DequantizeLinear", [codes, scale_name, zero], f"{base}.dequantized")


def _layer(writer: _GraphWriter, name: str, layer: nn.Module, value: str) -> str:
    """A quantized Conv2d/Linear: Q/DQ of its input, DQ of its integer weight and bias."""
    quantizer: ActQuantizer = layer.input_quantizer  # type: ignore[assignment]
    x = _quantize_activation(writer, value, quantizer, f"{name}.input")
    codes, scale = layer.integer_weight()  # type: ignore[operator]
    codes_np = codes.cpu().numpy().astype(np.int64)
    channel_scale = scale.detach().flatten().to(torch.float32).cpu().numpy()
    per_channel = channel_scale.size > 1
    onnx_type = _code_type(writer, layer.weight_bits, signed=True)  # type: ignore[arg-type]
    weight_codes = writer.integer_constant(f"{name}.weight_codes", codes_np, onnx_type)
    axis = {"axis": 0} if per_channel else {}
    w_scale = writer.constant(
        f"{name}.weight_scale", channel_scale if per_channel else channel_scale.reshape(())
    )
    zeros = np.zeros(channel_scale.shape if per_channel else (), np.int64)
    w_zero = writer.integer_constant(f"{name}.weight_zero_point", zeros, onnx_type)
    weight = writer.node(
        "DequantizeLinear", [weight_codes, w_scale, w_zero], f"{name}.weight", **axis
    )
    inputs = [x, weight]
    codes_of_bias = layer.integer_bias()  # type: ignore[operator]
    if codes_of_bias is not None and layer.quantize_bias:
        # int32 codes on the accumulator grid, as the model adds them (QDQ's bias convention)
        grid = layer.bias_grid().expand(codes.shape[0])  # type: ignore[operator]
        b_codes = writer.constant(
            f"{name}.bias_codes", codes_of_bias.cpu().numpy().astype(np.int32)
        )
        b_scale = writer.constant(f"{name}.bias_scale", grid.to(torch.float32).cpu().numpy())
        b_zero = writer.constant(f"{name}.bias_zero_point", np.zeros(codes.shape[0], np.int32))
        inputs.append(
            writer.node("DequantizeLinear", [b_codes, b_scale, b_zero], f"{name}.bias", axis=0)
        )
    elif codes_of_bias is not None:  # a model that adds its bias in float: so does the graph
        bias = layer.bias.detach().to(torch.float32).cpu().numpy()  # type: ignore[union-attr]
        inputs.append(writer.constant(f"{name}.bias", bias))
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise QuantError(f"{_WHAT}: {name} pads by {layer.padding!r}/{layer.padding_mode}")
        pad_h, pad_w = layer.padding  # type: ignore[misc]
        return writer.node(
            "Conv",
            inputs,
            name,
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.stride),
            pads=[pad_h, pad_w, pad_h, pad_w],
            dilations=list(layer.dilation),
            group=layer.groups,
        )
    return writer.node("Gemm", inputs, name, transB=1)


def _pad_shortcut(writer: _GraphWriter, name: str, module: PadShortcut, value: str) -> str:
    """Option-A shortcut: every ``stride``-th pixel, then zero channels before and after."""
    starts = writer.constant(f"{name}.starts", np.array([0, 0], np.int64))
    ends = writer.constant(f"{name}.ends", np.array([_INT64_MAX, _INT64_MAX], np.int64))
    axes = writer.constant(f"{name}.axes", np.array([2, 3], np.int64))
    steps = writer.constant(f"{name}.steps", np.array([module.stride, module.stride], np.int64))
    sliced = writer.node("Slice", [value, starts, ends, axes, steps], f"{name}.subsampled")
    pads = np.array([0, module.pad_front, 0, 0, 0, module.pad_back, 0, 0], np.int64)
    return writer.node("Pad", [sliced, writer.constant(f"{name}.pads", pads)], name)


def _max_pool(writer: _GraphWriter, name: str, module: nn.MaxPool2d, value: str) -> str:
    kernel, stride = F._pair(module.kernel_size), F._pair(module.stride or module.kernel_size)  # type: ignore[attr-defined]
    pad, dilation = F._pair(module.padding), F._pair(module.dilation)  # type: ignore[attr-defined]
    return writer.node(
        "MaxPool",
        [value],
        name,
        kernel_shape=list(kernel),
        strides=list(stride),
        pads=[pad[0], pad[1], pad[0], pad[1]],
        dilations=list(dilation),
        ceil_mode=int(module.ceil_mode),
    )


def _flatten(writer: _GraphWriter, name: str, value: str, start_dim: int, end_dim: int) -> str:
    if end_dim != -1 or start_dim < 0:
        raise QuantError(f"{_WHAT}: {name} flattens dims {start_dim}..{end_dim}; only (d, -1)")
    return writer.node("Flatten", [value], name, axis=start_dim)


def _module_node(writer: _GraphWriter, model: nn.Module, node: fx.Node, values: list[str]) -> str:
    name, module = str(node.target), node_module(model, node)
    if isinstance(module, QUANT_LAYERS):
        return _layer(writer, name, module, values[0])
    if isinstance(module, QuantAdd):
        main = _quantize_activation(writer, values[0], module.main_quantizer, f"{name}.main")
        shortcut = _quantize_activation(
            writer, values[1], module.shortcut_quantizer, f"{name}.shortcut"
        )
        return writer.node("Add", [main, shortcut], name)
    if isinstance(module, ResidualAdd):
        return writer.node("Add", values[:2], name)
    if isinstance(module, nn.ReLU):
        return writer.node("Relu", values[:1], name)
    if isinstance(module, PadShortcut):
        return _pad_shortcut(writer, name, module, values[0])
    if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
        return writer.node("GlobalAveragePool", values[:1], name)
    if isinstance(module, nn.MaxPool2d):
        return _max_pool(writer, name, module, values[0])
    if isinstance(module, nn.Flatten):
        return _flatten(writer, name, values[0], module.start_dim, module.end_dim)
    if isinstance(module, nn.BatchNorm2d):
        raise QuantError(f"{_WHAT}: {name} is a BatchNorm: quantize with fold_bn")
    raise unsupported(node, _WHAT, model)


def to_onnx(model: nn.Module, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """The quantized ``model`` as an ONNX QDQ model (opset 21), input ``input`` [N, C, H, W]
    (N dynamic), output ``logits`` [N, classes]. ``input_shape``: one image's [C, H, W].

    Raises :class:`QuantError` for a float layer or any node the graph cannot express.
    """
    graph = trace_quantized(model)
    if not any(isinstance(m, QUANT_LAYERS) for m in model.modules()):
        raise QuantError(f"{_WHAT}: the model is not quantized (codesign ptq / qat first)")
    writer = _GraphWriter()
    helper, types = writer.helper, writer.types
    names: dict[fx.Node, str] = {}
    output: str | None = None
    with torch.no_grad():
        for node in graph.nodes:
            values = [names[a] for a in node.args if isinstance(a, fx.Node)]
            if node.op == "placeholder":
                names[node] = writer.name(INPUT_NAME)
            elif node.op == "output":
                output = values[0]
            elif node.op == "call_module":
                module = node_module(model, node)
                if isinstance(module, (nn.Identity, nn.Dropout)):
                    names[node] = values[0]
                else:
                    names[node] = _module_node(writer, model, node, values)
            elif node.op == "call_function" and node.target in (F.relu, torch.relu):
                names[node] = writer.node("Relu", values[:1], node.name)
            elif node.op == "call_function" and node.target is torch.flatten:
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                names[node] = _flatten(writer, node.name, values[0], int(start), int(end))  # type: ignore[arg-type]
            else:
                raise unsupported(node, _WHAT, model)
    assert output is not None
    writer.nodes.append(helper.make_node("Identity", [output], [OUTPUT_NAME], name="output"))
    classes = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
    outputs = getattr(classes, "out_features", None) or classes.out_channels
    onnx_graph = helper.make_graph(
        writer.nodes,
        type(model).__name__,
        [helper.make_tensor_value_info(INPUT_NAME, types.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, types.FLOAT, ["N", outputs])],
        writer.initializers,
    )
    proto = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="codesign"
    )
    proto.ir_version = IR_VERSION
    return proto


def storage_types(proto: onnx.ModelProto) -> dict[str, int]:
    """How many layers store their weight codes in each ONNX type, e.g. ``{"int8": 19}``."""
    from onnx import TensorProto

    counts: dict[str, int] = {}
    for tensor in proto.graph.initializer:
        if tensor.name.endswith(".weight_codes"):
            kind = TensorProto.DataType.Name(tensor.data_type).lower()
            counts[kind] = counts.get(kind, 0) + 1
    return counts
