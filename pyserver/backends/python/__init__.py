"""Python model backend (``backend: "python"`` or platform ``python``, file
``model.py``), in the shape of Triton's Python backend.

``model.py`` defines ``TritonPythonModel`` with ``initialize(args)``,
``execute(requests) -> responses`` and ``finalize()``, and imports
``triton_python_backend_utils`` (our compatible module of that name).

Each instance runs its model in a stub process of its own, as Triton does:
the model's Python code never holds the server's GIL, and a model that
crashes its process takes down only the requests it was running; the stub
restarts (and initialises again) for the next request. Tensors cross through
shared memory (shared_memory.py); the control socket carries only small
descriptors. ``execute`` here blocks on that socket without the GIL.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from google.protobuf import json_format

from pyserver.backends.python.shared_memory import SharedRegion
from pyserver.errors import Code, ServerError
from pyserver.protos import model_config_pb2 as mc

log = logging.getLogger("pyserver.backends.python")

INITIALIZE_TIMEOUT_S = 300.0
FINALIZE_TIMEOUT_S = 30.0

# TritonError codes (triton_python_backend_utils.TritonError) -> ours.
_ERROR_CODES = {0: Code.UNKNOWN, 1: Code.INTERNAL, 2: Code.NOT_FOUND, 3: Code.INVALID_ARG,
                4: Code.UNAVAILABLE, 5: Code.UNSUPPORTED, 6: Code.ALREADY_EXISTS,
                7: Code.UNAVAILABLE}


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


class _Stub:
    """One running stub process, its control socket and its two regions."""

    def __init__(self, model_file: Path, args: dict[str, str]) -> None:
        self.inputs = SharedRegion.create(f"pyserver-{args['model_name']}-in")
        self.outputs = SharedRegion.create(f"pyserver-{args['model_name']}-out")
        ours, theirs = socket.socketpair()
        fds = (theirs.fileno(), self.inputs.fd, self.outputs.fd)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pyserver.backends.python.stub", str(theirs.fileno()),
                 str(self.inputs.fd), str(self.inputs.size), str(self.outputs.fd),
                 str(self.outputs.size)],
                pass_fds=fds, stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            self._close_regions()
            raise
        finally:
            theirs.close()
        self.control = Connection(ours.detach())
        self.control.send(("initialize", str(model_file), args))
        if not self.control.poll(INITIALIZE_TIMEOUT_S):
            self.kill()
            raise ServerError(Code.INVALID_ARG, f"the python model did not initialise within "
                              f"{INITIALIZE_TIMEOUT_S:.0f} s")
        try:
            reply = self.control.recv()
        except (EOFError, OSError):
            code = self.process.wait()
            self.kill()
            raise ServerError(Code.INVALID_ARG, f"the python model's process exited with "
                              f"{code} while initialising") from None
        if reply[0] != "ok":
            self.kill()
            raise ServerError(Code.INVALID_ARG, f"the python model failed to initialise: "
                              f"{reply[1]}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def finalize(self) -> None:
        if self.alive():
            try:
                self.control.send(("finalize",))
                if self.control.poll(FINALIZE_TIMEOUT_S):
                    self.control.recv()
                self.process.wait(FINALIZE_TIMEOUT_S)
            except (EOFError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.control.close()
        self._close_regions()

    def _close_regions(self) -> None:
        self.inputs.close()
        self.outputs.close()


class PythonModelRuntime:
    """One instance of a Python model; one instance thread calls ``execute``."""

    def __init__(self, config: mc.ModelConfig, model_file: Path,
                 args: dict[str, str]) -> None:
        self._name = config.name
        self._model_file = model_file
        self._args = args
        self._stub: _Stub | None = _Stub(model_file, args)

    def execute(self, payloads: list) -> list:
        stub = self._stub
        if stub is None or not stub.alive():
            try:
                stub = self._restart()
            except ServerError as exc:
                return [ServerError(Code.UNAVAILABLE, exc.message)] * len(payloads)
        pairs = []
        counts = []
        for payload in payloads:
            counts.append(len(payload.inputs))
            pairs.extend(payload.inputs.items())
        descriptors = stub.inputs.write(pairs)
        requests = []
        start = 0
        for payload, count in zip(payloads, counts):
            requests.append((descriptors[start:start + count], list(payload.outputs)))
            start += count
        try:
            stub.control.send(("execute", stub.inputs.size, requests))
            reply = stub.control.recv()
        except (EOFError, OSError):
            code = stub.process.wait()
            stub.kill()
            self._stub = None
            log.error("python model '%s': its process exited with %s during execute; "
                      "it restarts for the next request", self._name, code)
            return [ServerError(Code.INTERNAL, f"the python model's process exited with {code} "
                                "while executing this request")] * len(payloads)
        if reply[0] != "ok":
            return [ServerError(Code.INTERNAL, f"python model: {reply[1]}")] * len(payloads)
        _, out_size, answers = reply
        stub.outputs.remap(out_size)
        return [self._result(stub, payload, answer) for payload, answer in zip(payloads, answers)]

    def _result(self, stub: _Stub, payload, answer: tuple):
        if answer[0] == "error":
            return ServerError(_ERROR_CODES.get(answer[1], Code.INTERNAL), answer[2])
        by_name = {d[0]: d for d in answer[1]}
        result = {}
        for name in payload.outputs:
            descriptor = by_name.get(name)
            if descriptor is None:
                return ServerError(Code.INTERNAL, f"the python model gave no output '{name}'")
            result[name] = stub.outputs.read(descriptor, copy=True)
        return result

    def _restart(self) -> _Stub:
        log.warning("python model '%s': starting a new process", self._name)
        self._stub = _Stub(self._model_file, self._args)
        return self._stub

    def close(self) -> None:
        if self._stub is not None:
            self._stub.finalize()
            self._stub = None


def load(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
         device_id: int) -> PythonModelRuntime:
    if not model_path.is_file():
        raise ServerError(Code.INVALID_ARG, f"model file '{model_path}' does not exist")
    return PythonModelRuntime(config, model_path,
                              initialize_args(config, model_path, instance, device_id))
