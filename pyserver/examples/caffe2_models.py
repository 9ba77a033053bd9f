"""Caffe2 NetDef models built in code (predict net + init net), for tests,
examples and benchmarks. Needs only protobuf: the nets are written with our
``caffe2.proto`` subset, which keeps Caffe2's field numbers."""

from __future__ import annotations

import numpy as np

from pyserver.protos import caffe2_pb2

_FILLS = {np.dtype(np.float32): "GivenTensorFill", np.dtype(np.float64): "GivenTensorDoubleFill",
          np.dtype(np.int32): "GivenTensorIntFill", np.dtype(np.int64): "GivenTensorInt64Fill"}


def operator(op_type: str, inputs: list[str], outputs: list[str],
             **args) -> caffe2_pb2.OperatorDef:
    """An OperatorDef; keyword arguments become Arguments (int -> i, float -> f,
    str/bytes -> s, list of int -> ints, list of float -> floats)."""
    op = caffe2_pb2.OperatorDef(type=op_type, input=inputs, output=outputs)
    for name, value in args.items():
        arg = op.arg.add(name=name)
        if isinstance(value, bool) or isinstance(value, (int, np.integer)):
            arg.i = int(value)
        elif isinstance(value, (float, np.floating)):
            arg.f = float(value)
        elif isinstance(value, str):
            arg.s = value.encode()
        elif isinstance(value, bytes):
            arg.s = value
        elif all(isinstance(v, (int, np.integer)) for v in value):
            arg.ints.extend(int(v) for v in value)
        else:
            arg.floats.extend(float(v) for v in value)
    return op


def fill(name: str, array: np.ndarray) -> caffe2_pb2.OperatorDef:
    """The init-net operator that creates blob ``name`` holding ``array``."""
    array = np.asarray(array)
    op = operator(_FILLS[array.dtype], [], [name], shape=list(array.shape))
    values = op.arg.add(name="values")
    if array.dtype.kind == "f":
        values.floats.extend(array.reshape(-1).tolist())
    else:
        values.ints.extend(array.reshape(-1).tolist())
    return op


def classifier_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded weights of ``classifier``: an 8x8 RGB image -> 10 classes."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return {
        "conv1_w": normal(4, 3, 3, 3), "conv1_b": normal(4),
        "bn_scale": (1 + 0.1 * rng.standard_normal(4)).astype(np.float32),
        "bn_bias": normal(4, scale=0.1), "bn_mean": normal(4, scale=0.1),
        "bn_var": (0.5 + rng.random(4)).astype(np.float32),
        "conv2_w": normal(4, 4, 1, 1), "conv2_b": normal(4),
        "channel_scale": (0.5 + rng.random(8)).astype(np.float32),
        "fc_w": normal(10, 128, scale=0.1), "fc_b": normal(10, scale=0.1),
    }


def classifier(seed: int = 0) -> tuple[bytes, bytes]:
    """(model.netdef, init_model.netdef) of a small image classifier:

        data [N,3,8,8] -> Conv 3x3 pad 1 -> SpatialBN -> Relu (in place) -> LRN
        -> MaxPool 2x2 -> (Conv 1x1 + skip: Sum) -> [it, AveragePool 3x3 pad 1]
        -> Concat (8 channels) -> Mul per channel (legacy broadcast, axis 1)
        -> Dropout (test) -> FC 128->10 -> Softmax = "prob" (also "fc")
    """
    weights = classifier_weights(seed)
    init = caffe2_pb2.NetDef(name="classifier_init", op=[fill(n, a) for n, a in weights.items()],
                             external_output=list(weights))
    predict = caffe2_pb2.NetDef(name="classifier", external_input=["data", *weights],
                                external_output=["prob", "fc"])
    predict.op.extend([
        operator("Conv", ["data", "conv1_w", "conv1_b"], ["conv1"], kernel=3, pad=1, order="NCHW"),
        operator("SpatialBN", ["conv1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn1"],
                 is_test=1, epsilon=1e-3),
        operator("Relu", ["bn1"], ["bn1"]),
        operator("LRN", ["bn1"], ["lrn1", "lrn1_scale"], size=3, alpha=0.3, beta=0.75, bias=1.5),
        operator("MaxPool", ["lrn1"], ["pool1"], kernel=2, stride=2),
        operator("Conv", ["pool1", "conv2_w", "conv2_b"], ["conv2"], kernel=1),
        operator("Sum", ["conv2", "pool1"], ["res"]),
        operator("AveragePool", ["res"], ["avg"], kernel=3, stride=1, pad=1),
        operator("Concat", ["res", "avg"], ["cat", "cat_split"], axis=1),
        operator("Mul", ["cat", "channel_scale"], ["scaled"], broadcast=1, axis=1),
        operator("Dropout", ["scaled"], ["dropped", "mask"], ratio=0.5, is_test=1),
        operator("FC", ["dropped", "fc_w", "fc_b"], ["fc"]),
        operator("Softmax", ["fc"], ["prob"]),
    ])
    return predict.SerializeToString(), init.SerializeToString()
