"""TensorFlow GraphDef backend (platform ``tensorflow_graphdef``, file
``model.graphdef``), run by the core's native TensorFlow runtime through
TensorFlow's C API (csrc/tensorflow_runtime.h).

Config inputs and outputs name graph tensors: ``NAME`` means ``NAME:0``,
``NAME:k`` the op's k-th output. The session runs on the instance thread
without the GIL; each instance has its own session and thread pools.
"""

from __future__ import annotations

from pathlib import Path

from pyserver import _core
from pyserver.backends import tf_c_api as tf
from pyserver.errors import Code, ServerError
from pyserver.protos import model_config_pb2 as mc

# Config parameters a model may set (the same keys as onnxruntime_onnx).
INTRA_OP_THREADS = "intra_op_thread_count"
INTER_OP_THREADS = "inter_op_thread_count"


def parameter(config: mc.ModelConfig, key: str, default: str) -> str:
    if key in config.parameters:
        return config.parameters[key].string_value
    return default


def session_config(config: mc.ModelConfig, device: str = "") -> bytes:
    """One intra-op and one inter-op thread per instance by default, as for
    onnxruntime: instances give the parallelism."""
    return tf.session_config(int(parameter(config, INTRA_OP_THREADS, "1")),
                             int(parameter(config, INTER_OP_THREADS, "1")), device)


def device_of(instance: mc.ModelInstanceGroup, device_id: int) -> tuple[str, int]:
    """TensorFlow's name of the instance's device ("" for CPU) and the core's
    device number (-1 for CPU)."""
    if instance.kind == mc.ModelInstanceGroup.KIND_GPU:
        return f"/device:GPU:{device_id}", device_id
    return "", -1


def load_native(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
                device_id: int, pool: _core.HostMemoryPool) -> _core.NativeRuntime:
    if not model_path.is_file():
        raise ServerError(Code.INVALID_ARG, f"model file '{model_path}' does not exist")
    device, core_device = device_of(instance, device_id)
    session = _core.tensorflow_session(tf.library_path(), session_config(config, device),
                                       graph_def=model_path.read_bytes(), device=device)
    names = [t.name for t in (*config.input, *config.output)]
    return _core.load_tensorflow(config, session, names, "graph", core_device, pool)
