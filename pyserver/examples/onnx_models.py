"""Builders for small real ONNX models used by examples, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

V1_TO_NUMPY: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "STRING": np.object_,
}

V1_TO_ONNX: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "STRING": TensorProto.STRING,
}

ONNX_TO_V1: dict[int, str] = {v: k for k, v in V1_TO_ONNX.items()}

ADD_SUB_DTYPES: tuple[str, ...] = tuple(t for t in V1_TO_ONNX if t not in ("BOOL", "STRING"))
IDENTITY_DTYPES: tuple[str, ...] = tuple(V1_TO_ONNX)

Dims = Sequence[int | str]


def _onnx_type(dtype: str, allowed: Sequence[str]) -> int:
    """Return the TensorProto type for a v1 dtype name, rejecting unsupported ones."""
    if dtype not in allowed:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {', '.join(allowed)}")
    return V1_TO_ONNX[dtype]


def _value(name: str, elem_type: int, shape: Dims) -> onnx.ValueInfoProto:
    """Return a tensor value info."""
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def _fp32(name: str, shape: Dims) -> onnx.ValueInfoProto:
    """Return an FP32 tensor value info."""
    return _value(name, TensorProto.FLOAT, shape)


def _model(
    name: str,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray] | None = None,
) -> bytes:
    """Assemble, check and serialize a single-graph model."""
    inits = [numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pyserver"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def add_sub(dtype: str = "FP32", dims: int = 16, batched: bool = True) -> bytes:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    elem = _onnx_type(dtype, ADD_SUB_DTYPES)
    shape: list[int | str] = ["batch", dims] if batched else [dims]
    return _model(
        f"add_sub_{dtype.lower()}",
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        [_value("INPUT0", elem, shape), _value("INPUT1", elem, shape)],
        [_value("OUTPUT0", elem, shape), _value("OUTPUT1", elem, shape)],
    )


def identity(dtype: str, shape: Dims) -> bytes:
    """OUTPUT0 = INPUT0 for any v1 dtype, symbolic (str) or fixed (int) dims."""
    elem = _onnx_type(dtype, IDENTITY_DTYPES)
    if any(isinstance(d, int) and d < 0 for d in shape):
        raise ValueError(f"negative dim in {list(shape)}; use a symbolic name instead")
    return _model(
        f"identity_{dtype.lower()}",
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        [_value("INPUT0", elem, shape)],
        [_value("OUTPUT0", elem, shape)],
    )


def _classifier_params(features: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the deterministic (W, b) of the classifier."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    return w, b


def classifier(features: int = 8, classes: int = 10, seed: int = 0) -> bytes:
    """OUTPUT = Softmax(INPUT @ W + b) with seeded random W, b."""
    w, b = _classifier_params(features, classes, seed)
    return _model(
        "classifier",
        [
            helper.make_node("MatMul", ["INPUT", "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["OUTPUT"], axis=-1),
        ],
        [_fp32("INPUT", ["batch", features])],
        [_fp32("OUTPUT", ["batch", classes])],
        {"W": w, "b": b},
    )


def classifier_reference(
    x: np.ndarray, features: int = 8, classes: int = 10, seed: int = 0
) -> np.ndarray:
    """Compute the classifier model's output in numpy."""
    w, b = _classifier_params(features, classes, seed)
    logits = np.asarray(x, dtype=np.float32) @ w + b
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def add_constant(value: float, dims: int = 16) -> bytes:
    """OUTPUT0 = INPUT0 + value (FP32)."""
    shape = ["batch", dims]
    return _model(
        "add_constant",
        [helper.make_node("Add", ["INPUT0", "C"], ["OUTPUT0"])],
        [_fp32("INPUT0", shape)],
        [_fp32("OUTPUT0", shape)],
        {"C": np.array(value, dtype=np.float32)},
    )


def gather(features: int = 4) -> bytes:
    """OUTPUT[b, 0] = DATA[b, IDX[b, 0]]: a model that fails at run time for an
    index outside [-features, features), to exercise per-request errors."""
    return _model(
        "gather",
        [helper.make_node("GatherElements", ["DATA", "IDX"], ["OUTPUT"], axis=1)],
        [_fp32("DATA", ["batch", features]), _value("IDX", TensorProto.INT64, ["batch", 1])],
        [_fp32("OUTPUT", ["batch", 1])],
        {},
    )


def _mlp_params(
    in_features: int, hidden: int, out_features: int, seed: int
) -> dict[str, np.ndarray]:
    """Return the deterministic weights of the MLP."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((in_features, hidden)) / np.sqrt(in_features)
    b1 = rng.standard_normal(hidden) * 0.1
    w2 = rng.standard_normal((hidden, out_features)) / np.sqrt(hidden)
    b2 = rng.standard_normal(out_features) * 0.1
    params = {"W1": w1, "B1": b1, "W2": w2, "B2": b2}
    return {k: v.astype(np.float32) for k, v in params.items()}


def mlp(
    in_features: int = 512, hidden: int = 1000, out_features: int = 1000, seed: int = 0
) -> bytes:
    """OUTPUT0 = Gemm(Relu(Gemm(INPUT0))), a compute-heavier FP32 model."""
    return _model(
        "mlp",
        [
            helper.make_node("Gemm", ["INPUT0", "W1", "B1"], ["h_raw"]),
            helper.make_node("Relu", ["h_raw"], ["h"]),
            helper.make_node("Gemm", ["h", "W2", "B2"], ["OUTPUT0"]),
        ],
        [_fp32("INPUT0", ["batch", in_features])],
        [_fp32("OUTPUT0", ["batch", out_features])],
        _mlp_params(in_features, hidden, out_features, seed),
    )


def mlp_reference(
    x: np.ndarray,
    in_features: int = 512,
    hidden: int = 1000,
    out_features: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Compute the mlp model's output in numpy."""
    p = _mlp_params(in_features, hidden, out_features, seed)
    h = np.maximum(np.asarray(x, dtype=np.float32) @ p["W1"] + p["B1"], 0)
    return (h @ p["W2"] + p["B2"]).astype(np.float32)


def accumulator(batched: bool = True) -> bytes:
    """A stateful model for the sequence batcher's implicit state: OUTPUT =
    STATE_OUT = (START ? 0 : STATE_IN) + INPUT, all INT32 of shape [batch, 1]
    (or [1]); START is a control input (int32 0/1), STATE_IN / STATE_OUT the
    state the server keeps per sequence."""
    shape: list[int | str] = ["batch", 1] if batched else [1]
    int32 = TensorProto.INT32
    return _model(
        "accumulator",
        [
            helper.make_node("Sub", ["ONE", "START"], ["KEEP"]),
            helper.make_node("Mul", ["KEEP", "STATE_IN"], ["KEPT"]),
            helper.make_node("Add", ["KEPT", "INPUT"], ["SUM"]),
            helper.make_node("Identity", ["SUM"], ["OUTPUT"]),
            helper.make_node("Identity", ["SUM"], ["STATE_OUT"]),
        ],
        [_value("INPUT", int32, shape), _value("START", int32, shape),
         _value("STATE_IN", int32, shape)],
        [_value("OUTPUT", int32, shape), _value("STATE_OUT", int32, shape)],
        {"ONE": np.array(1, np.int32)},
    )
