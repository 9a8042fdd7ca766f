"""The shipped ONNX file's own weights and graph, read with the ``onnx`` package (``onnx.load`` and
``onnx.numpy_helper``).

An explanation needs little of the file: the initializers as NumPy arrays, the nodes (op, inputs, outputs,
attributes), the graph's output names and the metadata. The class-activation map uses the head found here
(``head_weights``) and the effective receptive field runs the NumPy network on the convolutions found here
(``stage_convs``), so neither can drift from what ONNX Runtime runs. In a quantised (QDQ) model both read the weights
dequantised, and look through the quantise-dequantise pairs ONNX Runtime's quantiser puts on every activation; the
NumPy network then runs those weights in float, without the activations' rounding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.config import LOGITS_NAME, Backbone, NetworkConfig

_POINTWISE = ("Relu", "MaxPool")
_BETWEEN_CONVS = ("Clip", "Relu", "Add")  # what lies between two convolutions of a backbone: ReLU6, residual adds


class OnnxFormatError(ValueError):
    """The file is not an ONNX model this reader understands."""


@dataclass(frozen=True)
class Node:
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, int | float | list[int] | bytes | np.ndarray]


@dataclass(frozen=True)
class OnnxGraph:
    """What an explanation needs from the model file: named initializers, nodes, output names and metadata."""

    initializers: dict[str, np.ndarray]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    metadata: dict[str, str]

    def producer(self, name: str) -> Node:
        """The node whose outputs include ``name``."""
        for node in self.nodes:
            if name in node.outputs:
                return node
        raise OnnxFormatError(f"no node produces {name!r}")

    def constant(self, name: str) -> np.ndarray:
        """The value of ``name``: an initializer, or one reached through ``Identity``/``Constant`` nodes (exporters
        alias identical initializers through ``Identity``)."""
        seen = set()
        while name not in self.initializers:
            if name in seen:
                raise OnnxFormatError(f"{name!r} refers to itself")
            seen.add(name)
            try:
                node = self.producer(name)
            except OnnxFormatError:
                raise OnnxFormatError(f"{name!r} is neither an initializer nor computed from one") from None
            if node.op_type == "Constant" and isinstance(node.attributes.get("value"), np.ndarray):
                return node.attributes["value"]  # type: ignore[return-value]
            if node.op_type == "DequantizeLinear":
                return self._dequantized(node)
            if node.op_type != "Identity":
                raise OnnxFormatError(f"{name!r} is computed by {node.op_type}, not a constant")
            name = node.inputs[0]
        return self.initializers[name]

    def _dequantized(self, node: Node) -> np.ndarray:
        """A ``DequantizeLinear`` of constants: ``(q - zero_point) * scale``, per tensor or along ``axis``."""
        q = self.constant(node.inputs[0]).astype(np.float64)
        scale = self.constant(node.inputs[1]).astype(np.float64)
        zero = self.constant(node.inputs[2]).astype(np.float64) if len(node.inputs) > 2 else np.zeros_like(scale)
        if scale.size > 1:
            axis = int(node.attributes.get("axis", 1))  # type: ignore[arg-type]
            if not -q.ndim <= axis < q.ndim or q.shape[axis] != scale.size:
                raise OnnxFormatError(f"{node.outputs[0]!r}: {scale.size} scales for axis {axis} of shape {q.shape}")
            shape = [1] * q.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((q - zero) * scale).astype(np.float32)

    def source(self, name: str) -> Node:
        """The node computing activation ``name``, looking through the quantise-dequantise pairs of a QDQ model and
        the ``Cast`` nodes of a float16 one (whose inputs and outputs stay float32)."""
        node = self.producer(name)
        while node.op_type in ("DequantizeLinear", "Cast"):
            if node.op_type == "Cast":
                node = self.producer(node.inputs[0])
                continue
            quantize = self.producer(node.inputs[0])
            if quantize.op_type != "QuantizeLinear":
                break
            node = self.producer(quantize.inputs[0])
        return node

    def output_named(self, name: str) -> str:
        """The graph output carrying activation ``name``: ``name`` itself, or the output computed by the same node
        through quantise-dequantise pairs or ``Cast`` nodes (a float16 graph casts its outputs back to float32)."""
        produced = {o for n in self.nodes for o in n.outputs}
        if name in self.outputs or name not in produced:
            return name
        node = self.source(name)
        return next((out for out in self.outputs if out in produced and self.source(out) is node), name)

    def network_config(self) -> NetworkConfig:
        """The network configuration export wrote into the metadata (``network``)."""
        if "network" not in self.metadata:
            raise OnnxFormatError("the model's metadata has no 'network' entry")
        return NetworkConfig.from_dict(json.loads(self.metadata["network"]))


def _attribute(attribute: Any) -> int | float | list[int] | bytes | np.ndarray:
    """An ``onnx.AttributeProto``'s value: a tensor as a NumPy array, repeated values as a list."""
    from onnx import TensorProto, helper, numpy_helper

    value = helper.get_attribute_value(attribute)
    if isinstance(value, TensorProto):
        return numpy_helper.to_array(value)
    return list(value) if isinstance(value, list | tuple) else value


def read_onnx(path: Path) -> OnnxGraph:
    """Load ``path``; raises ``OnnxFormatError`` for files this reader cannot use."""
    # Imported here, not with the module: ``onnx`` brings ``ml_dtypes``, whose import costs 0.6-0.7 s of CPU, and
    # only the processes that explain (or list the explainable layers) need it.
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise OnnxFormatError(f"{path} is not an ONNX model: {exc}") from exc
    if not model.HasField("graph"):
        raise OnnxFormatError(f"{path} holds no graph")
    initializers: dict[str, np.ndarray] = {}
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            raise OnnxFormatError(
                f"initializer {tensor.name!r} is stored outside the file; the model must be self-contained"
            )
        initializers[tensor.name] = numpy_helper.to_array(tensor)
    nodes = tuple(
        Node(
            node.op_type,
            tuple(node.input),
            tuple(node.output),
            {attribute.name: _attribute(attribute) for attribute in node.attribute},
        )
        for node in model.graph.node
    )
    outputs = tuple(output.name for output in model.graph.output)
    return OnnxGraph(initializers, nodes, outputs, {entry.key: entry.value for entry in model.metadata_props})


_GLOBAL_POOLS = {"ReduceMax": "max", "GlobalMaxPool": "max", "ReduceMean": "avg", "GlobalAveragePool": "avg"}


def head_weights(graph: OnnxGraph, logits: str = LOGITS_NAME) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The linear head ``W (K, C)``, ``b (K,)``, the stage output it pools (global pool + Gemm) and the pool,
    ``"max"`` or ``"avg"``."""
    gemm = graph.source(logits)
    if gemm.op_type != "Gemm" or len(gemm.inputs) < 3:
        raise OnnxFormatError(f"{logits!r} comes from {gemm.op_type}, not a Gemm with bias")
    weight, bias = (graph.constant(name) for name in gemm.inputs[1:3])
    if gemm.attributes.get("transA", 0) or gemm.attributes.get("alpha", 1.0) != 1.0:
        raise OnnxFormatError("the head Gemm transposes or scales its input")
    weight = weight if gemm.attributes.get("transB", 0) else weight.T
    bias = bias * float(gemm.attributes.get("beta", 1.0))
    pool = graph.source(gemm.inputs[0])
    if pool.op_type not in _GLOBAL_POOLS:
        raise OnnxFormatError(f"the head reads {pool.op_type}, not a global max or average pool")
    stage = graph.output_named(pool.inputs[0])
    return weight.astype(np.float32), bias.astype(np.float32), stage, _GLOBAL_POOLS[pool.op_type]


@dataclass(frozen=True)
class ConvWeights:
    """One convolution as ONNX Runtime runs it: ``weight (C_out, C_in / groups, k, k)``, ``bias (C_out,)``.

    ``stage`` is the stage it belongs to; ``name`` the layer (the stage itself for the scratch network, one of the
    backbone's units such as ``blocks.4.depthwise`` for EfficientNet-Lite0).
    """

    stage: str
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int
    dilation: int
    groups: int = 1
    name: str = ""


def stage_convs(graph: OnnxGraph, stages: tuple[str, ...]) -> tuple[ConvWeights, ...]:
    """For each stage output, the convolution (batch-norm folded in) behind its ReLU/max-pool tail."""
    out: list[ConvWeights] = []
    for stage in stages:
        node = graph.source(stage)
        while node.op_type in _POINTWISE:
            node = graph.source(node.inputs[0])
        if node.op_type != "Conv":
            raise OnnxFormatError(f"{stage} is computed by {node.op_type} where a Conv was expected")
        out.append(_conv(graph, node, stage, stage))
    return tuple(out)


def _conv(graph: OnnxGraph, node: Node, stage: str, name: str) -> ConvWeights:
    """The ``Conv`` ``node``'s (dequantised) weights, bias and symmetric geometry."""
    weight = graph.constant(node.inputs[1])
    bias = graph.constant(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(weight.shape[0], np.float32)
    pads = list(node.attributes.get("pads", [0, 0, 0, 0]))  # type: ignore[arg-type]
    strides = list(node.attributes.get("strides", [1, 1]))  # type: ignore[arg-type]
    dilations = list(node.attributes.get("dilations", [1, 1]))  # type: ignore[arg-type]
    if len(set(pads)) != 1 or len(set(strides)) != 1 or len(set(dilations)) != 1:
        raise OnnxFormatError(f"{name}'s Conv is not symmetric: pads {pads} strides {strides}")
    groups = int(node.attributes.get("group", 1))  # type: ignore[arg-type]
    return ConvWeights(stage, weight, bias, strides[0], pads[0], dilations[0], groups, name)


def unit_convs(graph: OnnxGraph, backbone: Backbone) -> tuple[ConvWeights, ...]:
    """Every convolution of a backbone network (batch-norm folded in), one per ``backbone.units()`` entry, in order.

    The graph's ``Conv`` nodes must form one chain from the input, each reading the previous one's output through
    nothing but ReLU6 (``Clip``), residual ``Add`` and quantise-dequantise pairs, each with its unit's kernel, stride,
    padding, groups and weight shape; anything else is an ``OnnxFormatError`` naming the first mismatch.
    """
    convs = [node for node in graph.nodes if node.op_type == "Conv"]
    units = backbone.units()
    if len(convs) != len(units):
        raise OnnxFormatError(f"the graph has {len(convs)} convolutions; {backbone.name} has {len(units)}")
    out: list[ConvWeights] = []
    previous: tuple[str, ...] = ()
    for node, (stage, unit) in zip(convs, units, strict=True):
        conv = _conv(graph, node, stage, unit.name)
        expected = (unit.out_channels, unit.in_channels // unit.groups, unit.kernel, unit.kernel)
        found = (conv.weight.shape, conv.stride, conv.padding, conv.dilation, conv.groups)
        if found != (expected, unit.stride, unit.padding, 1, unit.groups):
            raise OnnxFormatError(
                f"{unit.name}: ONNX Conv (weight shape, stride, pad, dilation, groups) {found} differs from {unit}"
            )
        reads = _conv_input(graph, node.inputs[0])
        if reads != previous:
            raise OnnxFormatError(f"{unit.name} reads {reads or 'the input'}, not the convolution before it")
        previous = node.outputs
        out.append(conv)
    return tuple(out)


def _conv_input(graph: OnnxGraph, name: str) -> tuple[str, ...]:
    """The outputs of the ``Conv`` that activation ``name`` comes from through ReLU6 and residual adds (a residual
    ``Add`` is followed along its first input, the block's projection), or ``()`` for the graph input."""
    try:
        node = graph.source(name)
    except OnnxFormatError:
        return ()  # the graph input (or its quantise-dequantise pair)
    while node.op_type in _BETWEEN_CONVS:
        try:
            node = graph.source(node.inputs[0])
        except OnnxFormatError:
            return ()
    if node.op_type != "Conv":
        raise OnnxFormatError(f"{name!r} is computed by {node.op_type}, not a convolution of the backbone")
    return node.outputs
