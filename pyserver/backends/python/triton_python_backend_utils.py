"""A ``triton_python_backend_utils`` for pyserver's Python models.

Models written for Triton's Python backend do
``import triton_python_backend_utils as pb_utils``; in the stub process that
name is this module, so such a model runs unchanged. It covers what a model's
``initialize`` / ``execute`` / ``finalize`` use: tensors, requests,
responses, errors, config look-ups, type names and logging. Business logic
scripting (``InferenceRequest(...).exec()``) and decoupled response senders
are not offered and raise ``TritonModelException``.
"""

from __future__ import annotations

import json
import sys

import numpy as np

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1

_TRITON_TO_NUMPY = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32, "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


class TritonModelException(Exception):
    """Raise from a model to fail the requests of the call."""


class TritonError:
    """An error to put in an InferenceResponse."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, \
        CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = str(message)
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r})"


class Tensor:
    """A named tensor; ``as_numpy`` gives its array (inputs: a read-only view
    of the request's data, valid during the ``execute`` call)."""

    def __init__(self, name: str, tensor) -> None:
        if not isinstance(tensor, np.ndarray):
            tensor = np.asarray(tensor)
        if tensor.dtype.kind in "SU":
            tensor = tensor.astype(np.object_)
        self._name = name
        self._array = tensor

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def is_cpu(self) -> bool:
        return True

    def triton_dtype(self) -> str:
        return numpy_to_triton_type(self._array.dtype)

    def to_dlpack(self):
        return self._array.__dlpack__()

    @classmethod
    def from_dlpack(cls, name: str, capsule) -> "Tensor":
        return cls(name, np.from_dlpack(capsule))

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={list(self._array.shape)}, dtype={self._array.dtype})"


class InferenceRequest:
    """One request: its input tensors and the outputs asked for."""

    def __init__(self, inputs: list[Tensor] | None = None,
                 requested_output_names: list[str] | None = None, request_id: str = "",
                 correlation_id: int = 0, flags: int = 0, model_name: str = "",
                 model_version: int = -1, parameters: str = "{}", **_unused) -> None:
        self._inputs = list(inputs or [])
        self._by_name = {t.name(): t for t in self._inputs}
        self._requested = list(requested_output_names or [])
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._flags = flags
        self._model_name = model_name
        self._parameters = parameters

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def parameters(self) -> str:
        return self._parameters

    def is_cancelled(self) -> bool:
        return False

    def get_response_sender(self):
        raise TritonModelException("decoupled models are not supported by pyserver")

    def exec(self, *args, **kwargs):
        raise TritonModelException("business logic scripting (InferenceRequest.exec) is not "
                                   "supported by pyserver")

    async_exec = exec


class InferenceResponse:
    """The answer to one request: output tensors, or an error."""

    def __init__(self, output_tensors: list[Tensor] | None = None,
                 error: TritonError | None = None) -> None:
        self._outputs = list(output_tensors or [])
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return request._by_name.get(name)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    for tensor in response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def _config(model_config) -> dict:
    return json.loads(model_config) if isinstance(model_config, (str, bytes)) else model_config


def get_input_config_by_name(model_config, name: str) -> dict | None:
    for tensor in _config(model_config).get("input", []):
        if tensor.get("name") == name:
            return tensor
    return None


def get_output_config_by_name(model_config, name: str) -> dict | None:
    for tensor in _config(model_config).get("output", []):
        if tensor.get("name") == name:
            return tensor
    return None


def triton_string_to_numpy(triton_type_string: str):
    return _TRITON_TO_NUMPY.get(triton_type_string)


def numpy_to_triton_type(dtype) -> str | None:
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "TYPE_STRING"
    for name, numpy_type in _TRITON_TO_NUMPY.items():
        if np.dtype(numpy_type) == dtype:
            return name
    return None


def serialize_byte_tensor(input_tensor: np.ndarray) -> np.ndarray:
    """Elements as 4-byte little-endian lengths followed by bytes, flattened
    in C order (Triton's BYTES wire layout), as a uint8 array."""
    chunks = []
    for element in np.asarray(input_tensor, dtype=np.object_).reshape(-1):
        raw = element if isinstance(element, bytes) else str(element).encode("utf-8")
        chunks.append(len(raw).to_bytes(4, "little") + raw)
    return np.frombuffer(b"".join(chunks), dtype=np.uint8)


def deserialize_bytes_tensor(encoded_tensor) -> np.ndarray:
    data = bytes(encoded_tensor)
    out = []
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset:offset + 4], "little")
        out.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    result = np.empty(len(out), dtype=np.object_)
    result[:] = out
    return result


class Logger:
    """Messages go to the server's log (the stub's stderr)."""

    INFO, WARNING, ERROR, VERBOSE = range(4)
    _LEVELS = {INFO: "I", WARNING: "W", ERROR: "E", VERBOSE: "V"}

    @classmethod
    def log(cls, message: str, level: int = INFO) -> None:
        print(f"{cls._LEVELS.get(level, 'I')} python model: {message}", file=sys.stderr,
              flush=True)

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.log(message, cls.INFO)

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.log(message, cls.WARNING)

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.log(message, cls.ERROR)

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls.log(message, cls.VERBOSE)
