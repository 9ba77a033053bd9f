"""Translate a Caffe2 model (init NetDef + predict NetDef) into one ONNX graph.

No Caffe2 runtime exists for today's Pythons, so the caffe2_netdef backend
runs the translated graph on onnxruntime. The init net must be made of fill
operators (its outputs become the graph's initializers); the predict net may
use the operators in ``_TRANSLATORS`` — the set of image classifiers, in
NCHW order. Anything else is a ``TranslationError`` naming the operator.

Caffe2 lets an operator write a blob that already exists (``Relu X -> X``);
ONNX is single-assignment, so each write but a blob's last gets a fresh name,
and readers see the newest one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pyserver.protos import caffe2_pb2

OPSET = 17
IR_VERSION = 8


class TranslationError(ValueError):
    """The NetDef uses something this translator does not support."""


# caffe2.TensorProto.DataType -> (numpy dtype, ONNX elem type)
_CAFFE2_TYPES = {
    caffe2_pb2.TensorProto.FLOAT: (np.float32, TensorProto.FLOAT),
    caffe2_pb2.TensorProto.INT32: (np.int32, TensorProto.INT32),
    caffe2_pb2.TensorProto.BYTE: (np.uint8, TensorProto.UINT8),
    caffe2_pb2.TensorProto.BOOL: (np.bool_, TensorProto.BOOL),
    caffe2_pb2.TensorProto.UINT8: (np.uint8, TensorProto.UINT8),
    caffe2_pb2.TensorProto.INT8: (np.int8, TensorProto.INT8),
    caffe2_pb2.TensorProto.UINT16: (np.uint16, TensorProto.UINT16),
    caffe2_pb2.TensorProto.INT16: (np.int16, TensorProto.INT16),
    caffe2_pb2.TensorProto.INT64: (np.int64, TensorProto.INT64),
    caffe2_pb2.TensorProto.FLOAT16: (np.float16, TensorProto.FLOAT16),
    caffe2_pb2.TensorProto.DOUBLE: (np.float64, TensorProto.DOUBLE),
}

# Fill operators of an init net -> numpy dtype of the "values" they hold.
_GIVEN_FILLS = {
    "GivenTensorFill": np.float32, "GivenTensorDoubleFill": np.float64,
    "GivenTensorIntFill": np.int32, "GivenTensorInt64Fill": np.int64,
    "GivenTensorInt16Fill": np.int16, "GivenTensorBoolFill": np.bool_,
    "GivenTensorByteStringToUInt8Fill": np.uint8,
}


@dataclass
class GraphTensor:
    """A graph input or output: name, ONNX elem type and shape (None = any)."""

    name: str
    elem_type: int
    shape: Sequence[int | str | None]


def arguments(op: caffe2_pb2.OperatorDef) -> dict:
    """An operator's arguments as name -> value (scalar, bytes or list)."""
    out = {}
    for arg in op.arg:
        if arg.HasField("f"):
            out[arg.name] = arg.f
        elif arg.HasField("i"):
            out[arg.name] = arg.i
        elif arg.HasField("s"):
            out[arg.name] = arg.s
        elif arg.floats:
            out[arg.name] = list(arg.floats)
        elif arg.ints:
            out[arg.name] = list(arg.ints)
        elif arg.strings:
            out[arg.name] = list(arg.strings)
        elif arg.HasField("t") or arg.HasField("n") or arg.tensors or arg.nets:
            out[arg.name] = arg
        else:
            out[arg.name] = []
    return out


def initializers_from_init_net(init_net: caffe2_pb2.NetDef) -> dict[str, np.ndarray]:
    """Runs an init net made of fill operators; returns blob name -> array."""
    blobs: dict[str, np.ndarray] = {}
    for op in init_net.op:
        args = arguments(op)
        shape = [int(d) for d in args.get("shape", [])]
        if op.type in _GIVEN_FILLS:
            values = args.get("values", [])
            if isinstance(values, bytes):
                values = list(values)
            elif isinstance(values, list) and values and isinstance(values[0], bytes):
                values = [b for v in values for b in v]
            array = np.asarray(values, dtype=_GIVEN_FILLS[op.type])
        elif op.type == "ConstantFill":
            dtype = _CAFFE2_TYPES.get(args.get("dtype", caffe2_pb2.TensorProto.FLOAT))
            if dtype is None:
                raise TranslationError(f"init net: ConstantFill dtype {args.get('dtype')} "
                                       "is not supported")
            array = np.full(shape, args.get("value", 0), dtype=dtype[0])
        else:
            raise TranslationError(f"init net: operator '{op.type}' is not supported "
                                   "(expected fill operators such as GivenTensorFill)")
        if shape and array.size != int(np.prod(shape)):
            raise TranslationError(f"init net: {op.type} for '{op.output[0]}' has "
                                   f"{array.size} values for shape {shape}")
        array = array.reshape(shape) if shape else array.reshape(())
        for name in op.output:
            blobs[name] = array
    return blobs


@dataclass
class _Graph:
    """The ONNX graph being built, with the blob naming and known ranks."""

    initializers: dict[str, np.ndarray]
    nodes: list = field(default_factory=list)
    current: dict[str, str] = field(default_factory=dict)   # blob -> newest ONNX name
    ranks: dict[str, int] = field(default_factory=dict)      # ONNX name -> rank, where known
    writes_left: dict[str, int] = field(default_factory=dict)  # blob -> writes still to come
    reserved: set = field(default_factory=set)               # names no fresh name may take
    sources: set = field(default_factory=set)                # graph inputs and weights
    counter: int = 0

    def read(self, blob: str, op: caffe2_pb2.OperatorDef) -> str:
        name = self.current.get(blob)
        if name is None:
            raise TranslationError(f"operator '{op.type}' reads blob '{blob}', which no "
                                   "operator, input or weight provides")
        return name

    def write(self, blob: str) -> str:
        """The ONNX name of a new value of ``blob``: the blob's own name on its
        last write (so outputs keep their names), a fresh one before."""
        self.writes_left[blob] = self.writes_left.get(blob, 1) - 1
        if self.writes_left[blob] <= 0 and blob not in self.sources:
            name = blob
        else:
            name = self.temp(blob)
        self.current[blob] = name
        return name

    def temp(self, hint: str) -> str:
        name = hint
        while name in self.reserved:
            self.counter += 1
            name = f"{hint}__{self.counter}"
        self.reserved.add(name)
        return name

    def constant(self, hint: str, array: np.ndarray) -> str:
        name = self.temp(hint)
        self.initializers[name] = array
        self.ranks[name] = array.ndim
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))

    def rank(self, name: str) -> int | None:
        if name in self.initializers:
            return self.initializers[name].ndim
        return self.ranks.get(name)


# -- argument helpers ---------------------------------------------------------------

def _check_order(op: caffe2_pb2.OperatorDef, args: dict) -> None:
    order = args.get("order", b"NCHW")
    if isinstance(order, bytes):
        order = order.decode()
    if order != "NCHW":
        raise TranslationError(f"operator '{op.type}' with order {order} is not supported "
                               "(only NCHW)")


def _spatial(args: dict, plural: str, single: str, names_2d: tuple[str, str],
             default: int | None, rank: int | None) -> list[int] | None:
    if plural in args:
        return [int(v) for v in args[plural]]
    if all(n in args for n in names_2d):
        return [int(args[n]) for n in names_2d]
    if single in args:
        return [int(args[single])] * (rank or 2)
    if default is None:
        return None
    return [default] * (rank or 2)


def _window(op: caffe2_pb2.OperatorDef, args: dict, need_kernel: bool = True) -> dict:
    """kernel_shape, strides, pads, dilations of Conv and pooling operators."""
    _check_order(op, args)
    kernel = _spatial(args, "kernels", "kernel", ("kernel_h", "kernel_w"), None, None)
    if kernel is None and need_kernel:
        raise TranslationError(f"operator '{op.type}' has no kernel size")
    n = len(kernel) if kernel else 2
    strides = _spatial(args, "strides", "stride", ("stride_h", "stride_w"), 1, n)
    dilations = _spatial(args, "dilations", "dilation", ("dilation_h", "dilation_w"), 1, n)
    if "pads" in args:
        pads = [int(p) for p in args["pads"]]
    elif all(k in args for k in ("pad_t", "pad_l", "pad_b", "pad_r")):
        pads = [int(args[k]) for k in ("pad_t", "pad_l", "pad_b", "pad_r")]
    else:
        pads = [int(args.get("pad", 0))] * (2 * n)
    attrs = {"strides": strides, "pads": pads}
    if kernel:
        attrs["kernel_shape"] = kernel
    legacy = int(args.get("legacy_pad", 0))
    if legacy == 3:  # CAFFE_LEGACY_POOLING: output size rounds up
        attrs["ceil_mode"] = 1
    elif legacy not in (0, 1):  # NOTSET, VALID
        raise TranslationError(f"operator '{op.type}' legacy_pad {legacy} is not supported")
    if any(d != 1 for d in dilations):
        attrs["dilations"] = dilations
    return attrs


# -- operators ------------------------------------------------------------------------

Translator = Callable[[_Graph, caffe2_pb2.OperatorDef, dict, list[str]], None]


def _same_rank(graph: _Graph, src: str, dst: str) -> None:
    rank = graph.rank(src)
    if rank is not None:
        graph.ranks[dst] = rank


def _output(graph: _Graph, op: caffe2_pb2.OperatorDef, index: int = 0) -> str:
    if len(op.output) <= index:
        raise TranslationError(f"operator '{op.type}' needs output {index}")
    return graph.write(op.output[index])


def _conv(graph, op, args, ins):
    attrs = _window(op, args)
    group = int(args.get("group", 1))
    if group != 1:
        attrs["group"] = group
    out = _output(graph, op)
    graph.node("Conv", ins[:3], [out], **attrs)
    _same_rank(graph, ins[0], out)


def _pool(onnx_type: str, global_type: str) -> Translator:
    def translate(graph, op, args, ins):
        out = _output(graph, op)
        if int(args.get("global_pooling", 0)):
            _check_order(op, args)
            graph.node(global_type, ins[:1], [out])
        else:
            attrs = _window(op, args)
            if onnx_type == "AveragePool" and int(args.get("count_include_pad", 0)):
                attrs["count_include_pad"] = 1
            graph.node(onnx_type, ins[:1], [out], **attrs)
        _same_rank(graph, ins[0], out)
    return translate


def _spatial_bn(graph, op, args, ins):
    _check_order(op, args)
    if not int(args.get("is_test", 0)):
        raise TranslationError("operator 'SpatialBN' must have is_test=1 for inference")
    if len(ins) < 5:
        raise TranslationError("operator 'SpatialBN' needs X, scale, bias, mean and var")
    out = _output(graph, op)
    graph.node("BatchNormalization", ins[:5], [out], epsilon=float(args.get("epsilon", 1e-5)))
    _same_rank(graph, ins[0], out)


def _fc(transposed: bool) -> Translator:
    def translate(graph, op, args, ins):
        axis = int(args.get("axis", 1))
        axis_w = int(args.get("axis_w", 1))
        if axis != 1:
            raise TranslationError(f"operator '{op.type}' with axis {axis} is not supported")
        weight = ins[1]
        if weight in graph.initializers and graph.initializers[weight].ndim != 2:
            w = graph.initializers[weight]
            weight = graph.constant(weight, w.reshape(int(np.prod(w.shape[:axis_w])), -1))
        elif axis_w != 1:
            raise TranslationError(f"operator '{op.type}' with axis_w {axis_w} needs a constant "
                                   "weight")
        flat = graph.temp(op.output[0] + "_flat")
        graph.node("Flatten", [ins[0]], [flat], axis=1)
        out = _output(graph, op)
        graph.node("Gemm", [flat, weight, *ins[2:3]], [out], transB=0 if transposed else 1)
        graph.ranks[out] = 2
    return translate


def _elementwise(onnx_type: str) -> Translator:
    def translate(graph, op, args, ins):
        if len(ins) != 2:
            raise TranslationError(f"operator '{op.type}' needs two inputs")
        a, b = ins
        if int(args.get("broadcast", 0)) and int(args.get("axis", -1)) != -1:
            b = _align_for_legacy_broadcast(graph, op, a, b, int(args["axis"]))
        out = _output(graph, op)
        graph.node(onnx_type, [a, b], [out])
        rank_a, rank_b = graph.rank(a), graph.rank(b)
        if rank_a is not None and rank_b is not None:
            graph.ranks[out] = max(rank_a, rank_b)
    return translate


def _align_for_legacy_broadcast(graph: _Graph, op, a: str, b: str, axis: int) -> str:
    """Caffe2's ``broadcast=1, axis=k``: B's dims line up with A's from dim k.
    Trailing 1-dims make numpy broadcasting do the same."""
    rank_a, rank_b = graph.rank(a), graph.rank(b)
    if rank_a is None or rank_b is None:
        raise TranslationError(f"operator '{op.type}' with broadcast axis {axis}: the ranks "
                               "of its inputs are not known")
    if axis < 0:
        axis += rank_a
    trailing = rank_a - axis - rank_b
    if trailing < 0:
        raise TranslationError(f"operator '{op.type}': B of rank {rank_b} does not fit A of "
                               f"rank {rank_a} from axis {axis}")
    if trailing == 0:
        return b
    if b in graph.initializers:
        value = graph.initializers[b]
        return graph.constant(b, value.reshape(value.shape + (1,) * trailing))
    axes = graph.constant(b + "_axes", np.arange(rank_b, rank_b + trailing, dtype=np.int64))
    out = graph.temp(b + "_aligned")
    graph.node("Unsqueeze", [b, axes], [out])
    graph.ranks[out] = rank_a - axis
    return out


def _variadic(onnx_type: str) -> Translator:
    def translate(graph, op, args, ins):
        out = _output(graph, op)
        graph.node(onnx_type if len(ins) > 1 else "Identity", ins, [out])
        _same_rank(graph, ins[0], out)
    return translate


def _unary(onnx_type: str, **defaults) -> Translator:
    def translate(graph, op, args, ins):
        attrs = {k: float(args.get(k, v)) for k, v in defaults.items()}
        out = _output(graph, op)
        graph.node(onnx_type, ins[:1], [out], **attrs)
        _same_rank(graph, ins[0], out)
    return translate


def _concat(graph, op, args, ins):
    if int(args.get("add_axis", 0)):
        raise TranslationError("operator 'Concat' with add_axis=1 is not supported")
    if "axis" in args:
        axis = int(args["axis"])
    else:
        order = args.get("order", b"NCHW")
        axis = 3 if order in (b"NHWC", "NHWC") else 1
    out = _output(graph, op)
    graph.node("Concat", ins, [out], axis=axis)
    _same_rank(graph, ins[0], out)


def _softmax(graph, op, args, ins):
    axis = int(args.get("axis", 1))
    rank = graph.rank(ins[0])
    out = _output(graph, op)
    if rank is not None and axis in (rank - 1, -1):
        graph.node("Softmax", ins[:1], [out], axis=-1)
    else:
        # Caffe2 flattens to 2-D at ``axis`` and normalises each row.
        shape, flat, soft = (graph.temp(op.output[0] + s) for s in ("_shape", "_flat", "_soft"))
        graph.node("Shape", ins[:1], [shape])
        graph.node("Flatten", ins[:1], [flat], axis=axis)
        graph.node("Softmax", [flat], [soft], axis=1)
        graph.node("Reshape", [soft, shape], [out])
    _same_rank(graph, ins[0], out)


def _reshape(graph, op, args, ins):
    if len(ins) > 1:
        shape = ins[1]
        rank = None
    elif "shape" in args:
        dims = np.asarray(args["shape"], dtype=np.int64)
        shape = graph.constant(op.output[0] + "_shape", dims)
        rank = len(dims)
    else:
        raise TranslationError("operator 'Reshape' has neither a shape argument nor input")
    if len(op.output) > 1:
        graph.node("Shape", ins[:1], [graph.write(op.output[1])])
    out = _output(graph, op)
    graph.node("Reshape", [ins[0], shape], [out])
    if rank is not None:
        graph.ranks[out] = rank


def _flatten(graph, op, args, ins):
    out = _output(graph, op)
    graph.node("Flatten", ins[:1], [out], axis=int(args.get("axis", 1)))
    graph.ranks[out] = 2


def _flatten_to_vec(graph, op, args, ins):
    out = _output(graph, op)
    graph.node("Reshape", [ins[0], graph.constant("flat", np.array([-1], np.int64))], [out])
    graph.ranks[out] = 1


def _dropout(graph, op, args, ins):
    if not int(args.get("is_test", 0)):
        raise TranslationError("operator 'Dropout' must have is_test=1 for inference")
    _identity(graph, op, args, ins)


def _identity(graph, op, args, ins):
    out = _output(graph, op)
    graph.node("Identity", ins[:1], [out])
    _same_rank(graph, ins[0], out)


def _lrn(graph, op, args, ins):
    _check_order(op, args)
    if "size" not in args:
        raise TranslationError("operator 'LRN' has no size")
    out = _output(graph, op)
    graph.node("LRN", ins[:1], [out], size=int(args["size"]), alpha=float(args.get("alpha", 0)),
               beta=float(args.get("beta", 0)), bias=float(args.get("bias", 1.0)))
    _same_rank(graph, ins[0], out)


def _transpose(graph, op, args, ins):
    out = _output(graph, op)
    attrs = {"perm": [int(a) for a in args["axes"]]} if "axes" in args else {}
    graph.node("Transpose", ins[:1], [out], **attrs)
    _same_rank(graph, ins[0], out)


def _squeeze(onnx_type: str) -> Translator:
    def translate(graph, op, args, ins):
        dims = np.asarray(args.get("dims", []), dtype=np.int64)
        out = _output(graph, op)
        graph.node(onnx_type, [ins[0], graph.constant(op.output[0] + "_dims", dims)], [out])
        rank = graph.rank(ins[0])
        if rank is not None:
            graph.ranks[out] = rank + (len(dims) if onnx_type == "Unsqueeze" else -len(dims))
    return translate


def _scale(graph, op, args, ins):
    out = _output(graph, op)
    factor = graph.constant(op.output[0] + "_scale", np.array(args.get("scale", 1.0), np.float32))
    graph.node("Mul", [ins[0], factor], [out])
    _same_rank(graph, ins[0], out)


def _clip(graph, op, args, ins):
    out = _output(graph, op)
    bounds = [graph.constant(op.output[0] + "_min", np.array(args.get("min", -np.inf), np.float32)),
              graph.constant(op.output[0] + "_max", np.array(args.get("max", np.inf), np.float32))]
    graph.node("Clip", [ins[0], *bounds], [out])
    _same_rank(graph, ins[0], out)


def _cast(graph, op, args, ins):
    to = _CAFFE2_TYPES.get(int(args.get("to", caffe2_pb2.TensorProto.FLOAT)))
    if to is None:
        raise TranslationError(f"operator 'Cast' to type {args.get('to')} is not supported")
    out = _output(graph, op)
    graph.node("Cast", ins[:1], [out], to=to[1])
    _same_rank(graph, ins[0], out)


def _matmul(graph, op, args, ins):
    if int(args.get("axis_a", 1)) != 1 or int(args.get("axis_b", 1)) != 1:
        raise TranslationError("operator 'MatMul' with axis_a/axis_b other than 1 is not "
                               "supported")
    out = _output(graph, op)
    graph.node("Gemm", ins[:2], [out], transA=int(args.get("trans_a", 0)),
               transB=int(args.get("trans_b", 0)))
    graph.ranks[out] = 2


_TRANSLATORS: dict[str, Translator] = {
    "Conv": _conv, "Conv2D": _conv,
    "MaxPool": _pool("MaxPool", "GlobalMaxPool"), "MaxPool2D": _pool("MaxPool", "GlobalMaxPool"),
    "AveragePool": _pool("AveragePool", "GlobalAveragePool"),
    "AveragePool2D": _pool("AveragePool", "GlobalAveragePool"),
    "SpatialBN": _spatial_bn,
    "FC": _fc(transposed=False), "FCTransposed": _fc(transposed=True),
    "MatMul": _matmul,
    "Relu": _unary("Relu"), "Sigmoid": _unary("Sigmoid"), "Tanh": _unary("Tanh"),
    "Exp": _unary("Exp"), "Log": _unary("Log"), "Sqrt": _unary("Sqrt"), "Abs": _unary("Abs"),
    "Negative": _unary("Neg"), "Softplus": _unary("Softplus"),
    "Elu": _unary("Elu", alpha=1.0), "LeakyRelu": _unary("LeakyRelu", alpha=0.01),
    "Sum": _variadic("Sum"), "Max": _variadic("Max"), "Min": _variadic("Min"),
    "Add": _elementwise("Add"), "Sub": _elementwise("Sub"), "Mul": _elementwise("Mul"),
    "Div": _elementwise("Div"),
    "Concat": _concat, "Softmax": _softmax, "Reshape": _reshape, "Flatten": _flatten,
    "FlattenToVec": _flatten_to_vec, "Dropout": _dropout, "LRN": _lrn, "Transpose": _transpose,
    "Squeeze": _squeeze("Squeeze"), "ExpandDims": _squeeze("Unsqueeze"), "Scale": _scale,
    "Clip": _clip, "Cast": _cast,
    "Copy": _identity, "Alias": _identity, "StopGradient": _identity,
    "EnsureCPUOutput": _identity,
}

SUPPORTED_OPERATORS = tuple(sorted(_TRANSLATORS))


def translate(predict_net: caffe2_pb2.NetDef, init_net: caffe2_pb2.NetDef,
              inputs: Sequence[GraphTensor], outputs: Sequence[GraphTensor]) -> onnx.ModelProto:
    """The ONNX model computing ``outputs`` from ``inputs`` the way the
    predict net does, with the init net's blobs as weights."""
    graph = _Graph(initializers_from_init_net(init_net))
    input_names = {t.name for t in inputs}
    for op in predict_net.op:
        for blob in op.output:
            graph.writes_left[blob] = graph.writes_left.get(blob, 0) + 1
            graph.reserved.add(blob)
    external = set(predict_net.external_input)
    for tensor in inputs:
        if external and tensor.name not in external:
            raise TranslationError(f"input '{tensor.name}' is not an external input of the "
                                   f"predict net ({', '.join(predict_net.external_input)})")
        graph.initializers.pop(tensor.name, None)
        graph.ranks[tensor.name] = len(tensor.shape)
    for name in (*graph.initializers, *input_names):
        graph.current[name] = name
        graph.reserved.add(name)
        graph.sources.add(name)
    for op in predict_net.op:
        translator = _TRANSLATORS.get(op.type)
        if translator is None:
            raise TranslationError(f"operator '{op.type}' is not supported by the NetDef "
                                   "translator")
        translator(graph, op, arguments(op), [graph.read(b, op) for b in op.input])
    for tensor in outputs:
        if graph.current.get(tensor.name) != tensor.name or tensor.name in input_names \
                or tensor.name in graph.initializers:
            raise TranslationError(f"output '{tensor.name}' is not computed by the predict net")
    return _model(graph, inputs, outputs, predict_net.name or "netdef")


def _model(graph: _Graph, inputs: Sequence[GraphTensor], outputs: Sequence[GraphTensor],
           name: str) -> onnx.ModelProto:
    used = {i for node in graph.nodes for i in node.input}
    initializers = [numpy_helper.from_array(np.ascontiguousarray(a), n)
                    for n, a in graph.initializers.items() if n in used]
    onnx_graph = helper.make_graph(
        graph.nodes, name,
        [helper.make_tensor_value_info(t.name, t.elem_type, list(t.shape)) for t in inputs],
        [helper.make_tensor_value_info(t.name, t.elem_type, None) for t in outputs],
        initializer=initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pyserver-caffe2")
    model.ir_version = IR_VERSION
    return model
