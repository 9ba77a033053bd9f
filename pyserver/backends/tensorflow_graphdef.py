"""TensorFlow GraphDef backend (platform ``tensorflow_graphdef``, file
``model.graphdef``), run through TensorFlow's C API (``tf_c_api``).

Config inputs and outputs name graph tensors: ``NAME`` means ``NAME:0``,
``NAME:k`` the op's k-th output. The session runs without the GIL; each
instance has its own session and thread pools.
"""

from __future__ import annotations

from pathlib import Path

from pyserver.backends import tf_c_api as tf
from pyserver.errors import Code, ServerError
from pyserver.protos import model_config_pb2 as mc

# Config parameters a model may set (the same keys as onnxruntime_onnx).
INTRA_OP_THREADS = "intra_op_thread_count"
INTER_OP_THREADS = "inter_op_thread_count"

V1_TO_TF = {
    mc.TYPE_BOOL: tf.TF_BOOL, mc.TYPE_UINT8: tf.TF_UINT8, mc.TYPE_UINT16: tf.TF_UINT16,
    mc.TYPE_UINT32: tf.TF_UINT32, mc.TYPE_UINT64: tf.TF_UINT64, mc.TYPE_INT8: tf.TF_INT8,
    mc.TYPE_INT16: tf.TF_INT16, mc.TYPE_INT32: tf.TF_INT32, mc.TYPE_INT64: tf.TF_INT64,
    mc.TYPE_FP16: tf.TF_HALF, mc.TYPE_FP32: tf.TF_FLOAT, mc.TYPE_FP64: tf.TF_DOUBLE,
    mc.TYPE_STRING: tf.TF_STRING,
}


def parameter(config: mc.ModelConfig, key: str, default: str) -> str:
    if key in config.parameters:
        return config.parameters[key].string_value
    return default


def session_config(config: mc.ModelConfig, device: str = "") -> bytes:
    """One intra-op and one inter-op thread per instance by default, as for
    onnxruntime: instances give the parallelism."""
    return tf.session_config(int(parameter(config, INTRA_OP_THREADS, "1")),
                             int(parameter(config, INTER_OP_THREADS, "1")), device)


class TensorFlowRuntime:
    """One TensorFlow session; one instance thread calls ``execute``.

    ``tensor_names`` maps each config input and output name to its tensor in
    the graph.
    """

    def __init__(self, session: tf.Session, config: mc.ModelConfig,
                 tensor_names: dict[str, str]) -> None:
        self._session = session
        self._input_names = [i.name for i in config.input]
        self._tensor_names = tensor_names
        self._feeds = session.prepare_feeds([tensor_names[n] for n in self._input_names])
        self._fetches: dict[tuple[str, ...], tuple[str, ...]] = {}

    def execute(self, payloads: list) -> list:
        return [self._run(p) for p in payloads]

    def _run(self, payload) -> dict:
        outputs = tuple(payload.outputs)
        fetches = self._fetches.get(outputs)
        if fetches is None:
            fetches = self._fetches[outputs] = tuple(self._tensor_names[n] for n in outputs)
        try:
            arrays = [payload.inputs[name] for name in self._input_names]
        except KeyError as exc:
            raise ServerError(Code.INVALID_ARG, f"input {exc} is missing") from None
        values = self._session.run(self._feeds, arrays, fetches)
        return dict(zip(outputs, values))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def check_io(session: tf.Session, config: mc.ModelConfig, tensor_names: dict[str, str],
             what: str = "graph") -> None:
    """Config tensors must exist in the graph with the config's data types."""
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            graph_name = tensor_names[tensor.name]
            try:
                dtype = session.dtype(session.output(graph_name))
            except ServerError as exc:
                raise ServerError(Code.INVALID_ARG, f"{kind} '{tensor.name}': the {what} has no "
                                  f"tensor '{graph_name}' ({exc.message})") from None
            expected = V1_TO_TF.get(tensor.data_type)
            if dtype != expected:
                raise ServerError(Code.INVALID_ARG, f"{kind} '{tensor.name}' is "
                                  f"{tf.TYPE_NAMES.get(dtype, dtype)} in the model but "
                                  f"{mc.DataType.Name(tensor.data_type)} in the config")


def load(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
         device_id: int) -> TensorFlowRuntime:
    if not model_path.is_file():
        raise ServerError(Code.INVALID_ARG, f"model file '{model_path}' does not exist")
    device = ""
    if instance.kind == mc.ModelInstanceGroup.KIND_GPU:
        device = f"/device:GPU:{device_id}"
    session = tf.Session.from_graphdef(model_path.read_bytes(), session_config(config, device),
                                       device)
    names = {t.name: t.name for t in (*config.input, *config.output)}
    try:
        check_io(session, config, names)
    except BaseException:
        session.close()
        raise
    return TensorFlowRuntime(session, config, names)

