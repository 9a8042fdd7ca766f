"""The shipped ONNX file's own weights and graph, read without the ``onnx`` package (the serving image lacks it).

ONNX files are Protocol Buffers; this reads the few messages an explanation needs straight from the wire format:
``ModelProto`` (graph, metadata), ``GraphProto`` (nodes, initializers, outputs), ``NodeProto`` (op, inputs,
outputs, attributes) and ``TensorProto`` (float32/float64/int64 data, and the int8/uint8/int32 of quantised
models, raw or typed, stored inside the file). The class-activation map uses the head found here (``head_weights``)
and the effective receptive field runs the NumPy network on the convolutions found here (``stage_convs``), so neither
can drift from what ONNX Runtime runs. In a quantised (QDQ) model both read the weights dequantised, and look
through the quantise-dequantise pairs ONNX Runtime's quantiser puts on every activation; the NumPy network then
runs those weights in float, without the activations' rounding.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.config import LOGITS_NAME, NetworkConfig

_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 11: np.float64}
_INT32_DATA = (2, 3, 6)  # types whose typed values travel in int32_data (field 5)
_POINTWISE = ("Relu", "MaxPool")


class OnnxFormatError(ValueError):
    """The file is not an ONNX model this reader understands."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` for every field of one message; LEN values are bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise OnnxFormatError("truncated length-delimited field")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire == 5:
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire}")


def _ints(wire: int, value: int | bytes) -> list[int]:
    """A repeated int64 field's values from one occurrence, packed (LEN) or not."""
    if wire == 0:
        return [_signed(int(value))]
    out, pos, data = [], 0, bytes(value)
    while pos < len(data):
        v, pos = _varint(data, pos)
        out.append(_signed(v))
    return out


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
        """The node computing activation ``name``, looking through the quantise-dequantise pairs of a QDQ model."""
        node = self.producer(name)
        while node.op_type == "DequantizeLinear":
            quantize = self.producer(node.inputs[0])
            if quantize.op_type != "QuantizeLinear":
                break
            node = self.producer(quantize.inputs[0])
        return node

    def network_config(self) -> NetworkConfig:
        """The network configuration export wrote into the metadata (``network``)."""
        if "network" not in self.metadata:
            raise OnnxFormatError("the model's metadata has no 'network' entry")
        return NetworkConfig.from_dict(json.loads(self.metadata["network"]))


def _tensor(buf: bytes) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    name, dtype, raw, typed, external = "", 0, None, [], False
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _ints(wire, value)
        elif number == 2:
            dtype = int(value)
        elif number in (4, 5, 7, 10) and wire == 2:  # packed float_data / int32_data / int64_data / double_data
            typed.append(bytes(value))
        elif number in (4, 5, 7, 10):
            typed.append(value)
        elif number == 8:
            name = bytes(value).decode()
        elif number == 9:
            raw = bytes(value)
        elif number == 14:
            external = int(value) == 1
    if external:
        raise OnnxFormatError(f"initializer {name!r} is stored outside the file; the model must be self-contained")
    if dtype not in _DTYPES:
        raise OnnxFormatError(f"initializer {name!r} has unsupported data type {dtype}")
    np_dtype = np.dtype(_DTYPES[dtype]).newbyteorder("<")
    if raw is not None:
        array = np.frombuffer(raw, dtype=np_dtype)
    elif dtype == 7 or dtype in _INT32_DATA:
        array = np.array([v for t in typed for v in (_ints(2, t) if isinstance(t, bytes) else [_signed(t)])])
    else:
        array = np.frombuffer(b"".join(t if isinstance(t, bytes) else bytes(t) for t in typed), dtype=np_dtype)
    return name, array.astype(_DTYPES[dtype]).reshape(dims)


def _node(buf: bytes) -> Node:
    inputs: list[str] = []
    outputs: list[str] = []
    op_type = ""
    attributes: dict[str, int | float | list[int] | bytes | np.ndarray] = {}
    for number, _, value in _fields(buf):
        if number == 1:
            inputs.append(bytes(value).decode())
        elif number == 2:
            outputs.append(bytes(value).decode())
        elif number == 4:
            op_type = bytes(value).decode()
        elif number == 5:
            attr_name, attr_value, ints = "", None, []
            for a_number, a_wire, a_value in _fields(bytes(value)):
                if a_number == 1:
                    attr_name = bytes(a_value).decode()
                elif a_number == 2:
                    attr_value = float(np.frombuffer(bytes(a_value), "<f4")[0])
                elif a_number == 3:
                    attr_value = _signed(int(a_value))
                elif a_number == 4:
                    attr_value = bytes(a_value)
                elif a_number == 5:
                    attr_value = _tensor(bytes(a_value))[1]
                elif a_number == 8:
                    ints += _ints(a_wire, a_value)
            attributes[attr_name] = ints if attr_value is None else attr_value
    return Node(op_type, tuple(inputs), tuple(outputs), attributes)


def read_onnx(path: Path) -> OnnxGraph:
    """Parse ``path``; raises ``OnnxFormatError`` for files this reader cannot use."""
    graph_bytes = b""
    metadata: dict[str, str] = {}
    for number, _, value in _fields(Path(path).read_bytes()):
        if number == 7:
            graph_bytes = bytes(value)
        elif number == 14:
            entry = {n: bytes(v).decode() for n, _, v in _fields(bytes(value))}
            metadata[entry.get(1, "")] = entry.get(2, "")
    if not graph_bytes:
        raise OnnxFormatError(f"{path} holds no graph")
    initializers: dict[str, np.ndarray] = {}
    nodes: list[Node] = []
    outputs: list[str] = []
    for number, _, value in _fields(graph_bytes):
        if number == 1:
            nodes.append(_node(bytes(value)))
        elif number == 5:
            name, array = _tensor(bytes(value))
            initializers[name] = array
        elif number == 12:
            outputs += [bytes(v).decode() for n, _, v in _fields(bytes(value)) if n == 1]
    return OnnxGraph(initializers, tuple(nodes), tuple(outputs), metadata)


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
    return weight.astype(np.float32), bias.astype(np.float32), pool.inputs[0], _GLOBAL_POOLS[pool.op_type]


@dataclass(frozen=True)
class ConvWeights:
    """One stage's convolution as ONNX Runtime runs it: ``weight (C_out, C_in, k, k)``, ``bias (C_out,)``."""

    stage: str
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int
    dilation: int


def stage_convs(graph: OnnxGraph, stages: tuple[str, ...]) -> tuple[ConvWeights, ...]:
    """For each stage output, the convolution (batch-norm folded in) behind its ReLU/max-pool tail."""
    out: list[ConvWeights] = []
    for stage in stages:
        node = graph.source(stage)
        while node.op_type in _POINTWISE:
            node = graph.source(node.inputs[0])
        if node.op_type != "Conv":
            raise OnnxFormatError(f"{stage} is computed by {node.op_type} where a Conv was expected")
        weight = graph.constant(node.inputs[1])
        bias = graph.constant(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(weight.shape[0], np.float32)
        pads = list(node.attributes.get("pads", [0, 0, 0, 0]))  # type: ignore[arg-type]
        strides = list(node.attributes.get("strides", [1, 1]))  # type: ignore[arg-type]
        dilations = list(node.attributes.get("dilations", [1, 1]))  # type: ignore[arg-type]
        if len(set(pads)) != 1 or len(set(strides)) != 1 or len(set(dilations)) != 1:
            raise OnnxFormatError(f"{stage}'s Conv is not symmetric: pads {pads} strides {strides}")
        out.append(ConvWeights(stage, weight, bias, strides[0], pads[0], dilations[0]))
    return tuple(out)
