"""Python model backend (``backend: "python"`` or platform ``python``, file
``model.py``), in the shape of Triton's Python backend.

``model.py`` defines ``TritonPythonModel`` with ``initialize(args)``,
``execute(requests) -> responses`` and ``finalize()``, and imports
``triton_python_backend_utils`` (our compatible module of that name).

Each instance runs its model in a stub process of its own, as Triton does,
driven from the core's instance thread (csrc/python_stub_runtime.cc): the
model's Python code never holds the server's GIL, and the instance thread
never takes it. A model that crashes its process takes down only the
requests it was running (they fail naming the exit code or signal); the stub
starts again (and initialises again) before the next request. Tensors cross
through shared memory; the control socket carries only small descriptors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from google.protobuf import json_format

from pyserver import _core
from pyserver.errors import Code, ServerError
from pyserver.protos import model_config_pb2 as mc

INITIALIZE_TIMEOUT_S = 300.0
FINALIZE_TIMEOUT_S = 30.0


def model_config_json(config: mc.ModelConfig) -> str:
    """The config as Triton hands it to ``initialize``: JSON with the proto's
    field names and every field, defaults included."""
    return json.dumps(json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


def initialize_args(config: mc.ModelConfig, model_file: Path, instance: mc.ModelInstanceGroup,
                    device_id: int) -> dict[str, str]:
    """The ``args`` of ``TritonPythonModel.initialize`` (all strings, as in Triton)."""
    gpu = instance.kind == mc.ModelInstanceGroup.KIND_GPU
    return {
        "model_config": model_config_json(config),
        "model_instance_kind": "GPU" if gpu else "CPU",
        "model_instance_name": f"{instance.name}_{max(device_id, 0)}",
        "model_instance_device_id": str(max(device_id, 0)),
        "model_repository": str(model_file.parent.parent),
        "model_version": model_file.parent.name,
        "model_name": config.name,
    }


def stub_command() -> list[str]:
    """How the core starts a stub: this interpreter, never importing from the
    server's working directory (``-P``; on Python 3.10, ``-I``)."""
    isolation = "-P" if sys.version_info >= (3, 11) else "-I"
    return [sys.executable, isolation, "-m", "pyserver.backends.python.stub"]


def load_native(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
                device_id: int, pool) -> _core.NativeRuntime:
    """Starts the instance's stub (blocks until the model has initialised)."""
    if not model_path.is_file():
        raise ServerError(Code.INVALID_ARG, f"model file '{model_path}' does not exist")
    args = initialize_args(config, model_path, instance, device_id)
    return _core.load_python_stub(config, stub_command(), str(model_path), json.dumps(args),
                                  device_id, pool, INITIALIZE_TIMEOUT_S, FINALIZE_TIMEOUT_S)
