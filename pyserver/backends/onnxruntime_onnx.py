"""ONNX Runtime backend (platform ``onnxruntime_onnx``, file ``model.onnx``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from pyserver.errors import ServerError, Code
from pyserver.protos import model_config_pb2 as mc

# Config parameters a model may set (`parameters { key: ... value { string_value: ... } }`).
INTRA_OP_THREADS = "intra_op_thread_count"
INTER_OP_THREADS = "inter_op_thread_count"

# onnxruntime's type strings, as v1 DataType values.
_ORT_TYPES = {
    "tensor(bool)": mc.TYPE_BOOL, "tensor(uint8)": mc.TYPE_UINT8, "tensor(uint16)": mc.TYPE_UINT16,
    "tensor(uint32)": mc.TYPE_UINT32, "tensor(uint64)": mc.TYPE_UINT64, "tensor(int8)": mc.TYPE_INT8,
    "tensor(int16)": mc.TYPE_INT16, "tensor(int32)": mc.TYPE_INT32, "tensor(int64)": mc.TYPE_INT64,
    "tensor(float16)": mc.TYPE_FP16, "tensor(float)": mc.TYPE_FP32, "tensor(double)": mc.TYPE_FP64,
    "tensor(string)": mc.TYPE_STRING,
}


def _parameter(config: mc.ModelConfig, key: str, default: int) -> int:
    if key in config.parameters:
        return int(config.parameters[key].string_value)
    return default


def _session_options(config: mc.ModelConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # One thread per instance by default: instances give the parallelism,
    # and spinning pool threads would steal the cores the front end needs.
    options.intra_op_num_threads = _parameter(config, INTRA_OP_THREADS, 1)
    options.inter_op_num_threads = _parameter(config, INTER_OP_THREADS, 1)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxRuntime:
    """One ONNX Runtime session; one instance thread calls ``execute``."""

    def __init__(self, session: ort.InferenceSession, config: mc.ModelConfig) -> None:
        self._session = session
        self._string_inputs = {i.name for i in config.input if i.data_type == mc.TYPE_STRING}
        self._string_outputs = {o.name for o in config.output if o.data_type == mc.TYPE_STRING}

    def execute(self, payloads: list) -> list:
        return [self._run(p) for p in payloads]

    def _run(self, payload) -> dict:
        inputs = payload.inputs
        if self._string_inputs:
            inputs = dict(inputs)
            for name in self._string_inputs:
                inputs[name] = np.vectorize(lambda b: b.decode("utf-8", "surrogateescape"),
                                            otypes=[np.object_])(inputs[name])
        try:
            values = self._session.run(payload.outputs, inputs)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ServerError(Code.INTERNAL, f"onnxruntime: {exc}") from None
        return dict(zip(payload.outputs, values))

    def close(self) -> None:
        self._session = None


def load(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
         device_id: int) -> OnnxRuntime:
    if not model_path.is_file():
        raise ServerError(Code.INVALID_ARG, f"model file '{model_path}' does not exist")
    providers = ["CPUExecutionProvider"]
    if instance.kind == mc.ModelInstanceGroup.KIND_GPU:
        providers = [("CUDAExecutionProvider", {"device_id": device_id})]
    try:
        session = ort.InferenceSession(str(model_path), _session_options(config),
                                       providers=providers)
    except Exception as exc:
        raise ServerError(Code.INVALID_ARG, f"onnxruntime could not load '{model_path}': {exc}") from None
    _check_io(session, config)
    return OnnxRuntime(session, config)


def _check_io(session: ort.InferenceSession, config: mc.ModelConfig) -> None:
    """Config tensors must exist in the model, with the same data types."""
    for kind, tensors, model_tensors in (("input", config.input, session.get_inputs()),
                                         ("output", config.output, session.get_outputs())):
        by_name = {t.name: t for t in model_tensors}
        for tensor in tensors:
            found = by_name.get(tensor.name)
            if found is None:
                raise ServerError(Code.INVALID_ARG, f"model has no {kind} '{tensor.name}'; "
                                  f"it has {', '.join(sorted(by_name))}")
            actual = _ORT_TYPES.get(found.type)
            if actual != tensor.data_type:
                raise ServerError(Code.INVALID_ARG, f"{kind} '{tensor.name}' is {found.type} in "
                                  f"the model but {mc.DataType.Name(tensor.data_type)} in the config")
