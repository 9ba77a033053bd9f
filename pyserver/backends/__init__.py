"""Backends: one module per platform. A native backend's module has
``load_native(config, model_path, instance, device_id, pool)`` returning a
``_core.NativeRuntime`` (a C++ runtime: instance threads never take the
GIL); the others have ``load(config, model_path, instance, device_id)``
returning a Python runtime with ``execute(payloads) -> results`` and
``close()``. A module may have both; the native one is used.

Modules are imported lazily, only when a model of their platform loads.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Protocol, Sequence

from pyserver.errors import ServerError, Code
from pyserver.protos import model_config_pb2 as mc

_MODULES = {
    "onnxruntime_onnx": "pyserver.backends.onnxruntime_onnx",
    "tensorflow_graphdef": "pyserver.backends.tensorflow_graphdef",
    "tensorflow_savedmodel": "pyserver.backends.tensorflow_savedmodel",
    "pytorch_libtorch": "pyserver.backends.pytorch_libtorch",
    "python": "pyserver.backends.python",
    "tensorrt_plan": "pyserver.backends.tensorrt_plan",
    "caffe2_netdef": "pyserver.backends.caffe2_netdef",
}

# The package a platform's backend needs, for a clear load error where it is missing.
_EXTRAS = {
    "pytorch_libtorch": ("torch", "torch"),
    "caffe2_netdef": ("onnx", "caffe2"),
}


class Payload(Protocol):
    """What a runtime receives per request: the whole batch of each input."""

    inputs: dict
    outputs: Sequence[str]


class Runtime(Protocol):
    def execute(self, payloads: list) -> list: ...

    def close(self) -> None: ...


def backend_for(platform: str) -> ModuleType:
    """Imports and returns the backend module of ``platform``."""
    module = _MODULES.get(platform)
    if module is None:
        raise ServerError(Code.UNSUPPORTED, f"platform '{platform}' has no backend in this server")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package, extra = _EXTRAS.get(platform, (exc.name, ""))
        if exc.name != package:
            raise
        hint = f" (pip install 'pyserver[{extra}]')" if extra else ""
        raise ServerError(Code.UNAVAILABLE, f"platform '{platform}' needs {package}, "
                          f"which is not installed{hint}") from None


def load_runtime(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
                 device_id: int, pool=None) -> Runtime:
    """Loads one instance of a model version; ``pool`` is the core's
    HostMemoryPool that native runtimes allocate their outputs from. Raises
    on failure."""
    module = backend_for(config.platform)
    load_native = getattr(module, "load_native", None)
    if load_native is not None and pool is not None:
        return load_native(config, model_path, instance, device_id, pool)
    return module.load(config, model_path, instance, device_id)
