"""ONNX Runtime backend (platform ``onnxruntime_onnx``, file ``model.onnx``).

Sessions run in the C++ core through ONNX Runtime's C API
(``csrc/onnxruntime_runtime.h``): the instance thread never takes the GIL,
inputs are read where they lie and outputs land in the core's pooled memory.
The library is the onnxruntime wheel's ``capi/libonnxruntime.so.<version>``,
found without importing the Python package (``$PYSERVER_ONNXRUNTIME_LIBRARY``
names another one).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from pathlib import Path

from pyserver import _core
from pyserver.errors import ServerError, Code
from pyserver.protos import model_config_pb2 as mc

# Config parameters a model may set (`parameters { key: ... value { string_value: ... } }`).
INTRA_OP_THREADS = "intra_op_thread_count"
INTER_OP_THREADS = "inter_op_thread_count"

LIBRARY_ENV = "PYSERVER_ONNXRUNTIME_LIBRARY"
# Sessions log errors only (ONNX Runtime's OrtLoggingLevel).
_LOG_ERRORS = 3


def _parameter(config: mc.ModelConfig, key: str, default: int) -> int:
    if key in config.parameters:
        return int(config.parameters[key].string_value)
    return default


@functools.lru_cache(maxsize=None)
def library_path() -> str:
    """The libonnxruntime to load. UNAVAILABLE when onnxruntime is not installed."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return override
    spec = importlib.util.find_spec("onnxruntime")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidates = sorted(Path(location, "capi").glob("libonnxruntime.so.*"),
                            key=lambda p: [int(n) for n in re.findall(r"\d+", p.name)])
        if candidates:
            return str(candidates[-1])
    raise ServerError(Code.UNAVAILABLE, "platform 'onnxruntime_onnx' needs onnxruntime, "
                      "which is not installed")


def load_session(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
                 device_id: int, pool, *, model_bytes: bytes = b"",
                 load_error_prefix: str = ""):
    """A native ONNX Runtime session of ``config`` on the instance's device,
    from ``model_path`` or, when given, ``model_bytes``."""
    device = device_id if instance.kind == mc.ModelInstanceGroup.KIND_GPU else -1
    return _core.load_onnxruntime(
        config, library_path(), str(model_path), model_bytes, device,
        intra_op_threads=_parameter(config, INTRA_OP_THREADS, 1),
        inter_op_threads=_parameter(config, INTER_OP_THREADS, 1),
        log_severity=_LOG_ERRORS, load_error_prefix=load_error_prefix, pool=pool)


def load_native(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
                device_id: int, pool):
    if not model_path.is_file():
        raise ServerError(Code.INVALID_ARG, f"model file '{model_path}' does not exist")
    return load_session(config, model_path, instance, device_id, pool)
