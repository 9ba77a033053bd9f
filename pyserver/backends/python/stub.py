"""The stub process of one Python model instance.

Started by the core (csrc/python_stub_runtime.cc) as
``python -P -m pyserver.backends.python.stub CONTROL_FD IN_FD IN_SIZE OUT_FD OUT_SIZE``
(``-P``: nothing is imported from the server's working directory). It loads
the model file, then answers the core's messages on the control socket until
told to finalize or the server goes away. The wire is described in
csrc/python_stub_runtime.h; this module is its other end.

Inputs are read-only views of the input region; outputs are copied into the
output region, which this process grows as needed.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import struct
import sys
import traceback
from pathlib import Path

import numpy as np

from pyserver.backends.python import triton_python_backend_utils as pb_utils
from pyserver.backends.python.shared_memory import SharedRegion, aligned
from pyserver.tensors import NUMPY_DTYPES, deserialize_strings, serialize_strings

INITIALIZE, EXECUTE, FINALIZE = 1, 2, 3
OK, ERROR, RESULT, ACK = 10, 11, 12, 13
TYPE_STRING = 13
_TYPES = {dtype: data_type for data_type, dtype in NUMPY_DTYPES.items() if dtype != np.object_}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ACK_FRAME = _U32.pack(1) + bytes([ACK])


class Channel:
    """Length-prefixed frames on the control socket."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)

    def receive(self) -> bytes:
        (length,) = _U32.unpack(self._exactly(4))
        return self._exactly(length)

    def send(self, payload: bytes) -> None:
        self.sock.sendall(_U32.pack(len(payload)) + payload)

    def _exactly(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


class Message:
    """Reads the fields of one frame in order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def u8(self) -> int:
        self.offset += 1
        return self.data[self.offset - 1]

    def u32(self) -> int:
        (v,) = _U32.unpack_from(self.data, self.offset)
        self.offset += 4
        return v

    def u64(self) -> int:
        (v,) = _U64.unpack_from(self.data, self.offset)
        self.offset += 8
        return v

    def dims(self) -> tuple[int, ...]:
        n = self.u32()
        values = struct.unpack_from(f"<{n}q", self.data, self.offset)
        self.offset += 8 * n
        return values

    def text(self) -> str:
        n = self.u32()
        self.offset += n
        return self.data[self.offset - n:self.offset].decode("utf-8", "surrogateescape")


def _str(text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    return _U32.pack(len(data)) + data


def load_model(model_file: str, args: dict):
    """Imports ``model_file`` and returns its initialised TritonPythonModel."""
    sys.modules.setdefault("triton_python_backend_utils", pb_utils)
    path = Path(model_file)
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("model", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["model"] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "TritonPythonModel"):
        raise AttributeError(f"{path.name} defines no class TritonPythonModel")
    model = module.TritonPythonModel()
    if hasattr(model, "initialize"):
        model.initialize(args)
    return model


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pb_utils.TritonModelException):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def read_requests(message: Message, inputs: SharedRegion) -> list:
    """The execute message's requests, their tensors viewing the input region."""
    inputs.remap(message.u64())
    requests = []
    for _ in range(message.u32()):
        tensors = []
        for _ in range(message.u32()):
            name = message.text()
            data_type = message.u32()
            shape = message.dims()
            offset, nbytes = message.u64(), message.u64()
            view = memoryview(inputs.map)[offset:offset + nbytes] if nbytes else b""
            if data_type == TYPE_STRING:
                count = int(np.prod(shape, dtype=np.int64)) if shape else 1
                array = deserialize_strings(view, count, name).reshape(shape)
            else:
                array = np.frombuffer(view, dtype=NUMPY_DTYPES[data_type]).reshape(shape)
            tensors.append(pb_utils.Tensor(name, array))
        wanted = [message.text() for _ in range(message.u32())]
        correlation_id, correlation_text, flags = message.u64(), message.text(), message.u32()
        requests.append(pb_utils.InferenceRequest(
            tensors, requested_output_names=wanted, flags=flags,
            correlation_id=correlation_text if correlation_text else correlation_id))
    return requests


def _tensor_bytes(array: np.ndarray) -> tuple[int, bytes | np.ndarray]:
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        return TYPE_STRING, serialize_strings(np.asarray(array, dtype=np.object_))
    data_type = _TYPES.get(array.dtype)
    if data_type is None:
        raise TypeError(f"output type {array.dtype} has no tensor data type")
    return data_type, np.ascontiguousarray(array)


def answer(responses, count: int, outputs: SharedRegion) -> bytes:
    """The RESULT frame for ``responses`` (or ERROR when they are wrong)."""
    if not isinstance(responses, (list, tuple)) or len(responses) != count:
        got = len(responses) if isinstance(responses, (list, tuple)) else type(responses).__name__
        return bytes([ERROR]) + _str(f"execute returned {got} responses for {count} requests")
    staged = []  # per response: ("error", code, message) | [(name, type, shape, data)]
    total = 0
    for response in responses:
        if not isinstance(response, pb_utils.InferenceResponse):
            staged.append(("error", pb_utils.TritonError.INTERNAL,
                           f"execute returned a {type(response).__name__}, not an "
                           "InferenceResponse"))
        elif response.has_error():
            error = response.error()
            staged.append(("error", error.code(), error.message()))
        else:
            tensors = []
            for tensor in response.output_tensors():
                array = np.asarray(tensor.as_numpy())
                data_type, data = _tensor_bytes(array)
                tensors.append((tensor.name(), data_type, array.shape, data))
                total += aligned(len(data) if isinstance(data, bytes) else data.nbytes)
            staged.append(tensors)
    outputs.reserve(total)
    parts = [bytes([RESULT]), b"", _U32.pack(count)]
    offset = 0
    for item in staged:
        if isinstance(item, tuple):
            parts.append(b"\x00" + _U32.pack(int(item[1])) + _str(str(item[2])))
            continue
        parts.append(b"\x01" + _U32.pack(len(item)))
        for name, data_type, shape, data in item:
            raw = memoryview(data).cast("B") if not isinstance(data, bytes) else data
            nbytes = len(raw)
            if nbytes:
                outputs.map[offset:offset + nbytes] = raw
            parts.append(_str(name) + _U32.pack(data_type) + _U32.pack(len(shape)) +
                         struct.pack(f"<{len(shape)}q", *shape) + _U64.pack(offset) +
                         _U64.pack(nbytes))
            offset += aligned(nbytes)
    parts[1] = _U64.pack(outputs.size)
    return b"".join(parts)


def execute(model, message: Message, inputs: SharedRegion, outputs: SharedRegion) -> bytes:
    requests = read_requests(message, inputs)
    try:
        responses = model.execute(requests)
    except Exception as exc:
        traceback.print_exc()
        return bytes([ERROR]) + _str(_describe(exc))
    try:
        return answer(responses, len(requests), outputs)
    except Exception as exc:
        traceback.print_exc()
        return bytes([ERROR]) + _str(f"cannot return the outputs: {_describe(exc)}")


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group; the server decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = Channel(int(argv[1]))
    inputs = SharedRegion(int(argv[2]), int(argv[3]))
    outputs = SharedRegion(int(argv[4]), int(argv[5]))
    init = Message(control.receive())
    init.u8()
    model_file = init.text()
    args = json.loads(init.text())
    try:
        model = load_model(model_file, args)
    except BaseException as exc:
        traceback.print_exc()
        control.send(bytes([ERROR]) + _str(_describe(exc)))
        return 1
    control.send(bytes([OK]))
    while True:
        try:
            message = Message(control.receive())
        except (EOFError, OSError):
            break  # the server is gone
        kind = message.u8()
        if kind != EXECUTE:
            break
        control.sock.sendall(_ACK_FRAME)
        control.send(execute(model, message, inputs, outputs))
    try:
        if hasattr(model, "finalize"):
            model.finalize()
    except Exception:
        traceback.print_exc()
    try:
        control.send(bytes([OK]))
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
