"""Caffe2 NetDef backend (platform ``caffe2_netdef``: ``model.netdef``, the
predict net, beside ``init_model.netdef``, the weights).

At load time the two nets are translated into one ONNX graph
(``caffe2_to_onnx``) that runs on the native ONNX Runtime session of an
``onnxruntime_onnx`` model. An operator the translator does not know fails the load, naming it.
Needs the ``onnx`` package (the ``caffe2`` extra).
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf.message import DecodeError

from pyserver.backends.onnxruntime_onnx import load_session
from pyserver.errors import Code, ServerError
from pyserver.protos import caffe2_pb2
from pyserver.protos import model_config_pb2 as mc

INIT_FILENAME = "init_model.netdef"

# v1 data types -> onnx.TensorProto type names.
_ONNX_TYPE_NAMES = {
    mc.TYPE_BOOL: "BOOL", mc.TYPE_UINT8: "UINT8", mc.TYPE_UINT16: "UINT16",
    mc.TYPE_UINT32: "UINT32", mc.TYPE_UINT64: "UINT64", mc.TYPE_INT8: "INT8",
    mc.TYPE_INT16: "INT16", mc.TYPE_INT32: "INT32", mc.TYPE_INT64: "INT64",
    mc.TYPE_FP16: "FLOAT16", mc.TYPE_FP32: "FLOAT", mc.TYPE_FP64: "DOUBLE",
    mc.TYPE_STRING: "STRING",
}


def _read_net(path: Path) -> caffe2_pb2.NetDef:
    if not path.is_file():
        raise ServerError(Code.INVALID_ARG, f"model file '{path}' does not exist")
    try:
        return caffe2_pb2.NetDef.FromString(path.read_bytes())
    except DecodeError as exc:
        raise ServerError(Code.INVALID_ARG, f"'{path}' is not a Caffe2 NetDef: {exc}") from None


def to_onnx(config: mc.ModelConfig, predict_path: Path) -> bytes:
    """The serialized ONNX model of a NetDef model version."""
    try:
        from onnx import TensorProto

        from pyserver.backends import caffe2_to_onnx as c2o
    except ImportError:
        raise ServerError(Code.UNAVAILABLE, "caffe2_netdef models need the onnx package "
                          "(pip install 'pyserver[caffe2]')") from None

    predict = _read_net(predict_path)
    init = _read_net(predict_path.parent / INIT_FILENAME)
    batch = ["batch"] if config.max_batch_size > 0 else []

    def graph_tensor(tensor) -> c2o.GraphTensor:
        dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
        elem = getattr(TensorProto, _ONNX_TYPE_NAMES.get(tensor.data_type, "UNDEFINED"))
        return c2o.GraphTensor(tensor.name, elem, batch + [d if d > 0 else None for d in dims])

    try:
        model = c2o.translate(predict, init, [graph_tensor(t) for t in config.input],
                              [graph_tensor(t) for t in config.output])
    except c2o.TranslationError as exc:
        raise ServerError(Code.INVALID_ARG, f"cannot translate '{predict_path.name}': {exc}") \
            from None
    return model.SerializeToString()


def load_native(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
                device_id: int, pool):
    model = to_onnx(config, model_path)
    return load_session(config, model_path, instance, device_id, pool, model_bytes=model,
                        load_error_prefix="onnxruntime rejected the graph translated from "
                                          f"'{model_path}': ")
