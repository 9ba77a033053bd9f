"""Calls that are not inference, from a worker to the engine: status,
statistics, health, model control, shared-memory registration.

A frame is a 4-byte little-endian length and a pickle of a tuple; both ends
are processes of one installation started by the engine itself, over a
socket pair it created, so the pickles come from a trusted peer. A call is
(call id, name, args); the answer is (call id, True, value) or (call id,
False, (code, message)) for a ServerError. What a worker may call is the
engine's ``CALLS`` table, nothing else.
"""

from __future__ import annotations

import asyncio
import io
import pickle
import socket
import struct
import threading
from typing import Any

from google.protobuf import descriptor_pool, message, message_factory

from pyserver.errors import Code, ServerError

_LENGTH = struct.Struct("<I")
MAX_FRAME = 1 << 30


def _load_proto(full_name: str, data: bytes) -> message.Message:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor).FromString(data)


class _Pickler(pickle.Pickler):
    """Protobuf messages travel as their type name and wire bytes (their
    generated modules are not importable by pickle's module path)."""

    def reducer_override(self, obj):
        if isinstance(obj, message.Message):
            return _load_proto, (obj.DESCRIPTOR.full_name, obj.SerializeToString())
        return NotImplemented


def frame(content: tuple) -> bytes:
    out = io.BytesIO()
    out.write(b"\0\0\0\0")
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(content)
    data = out.getbuffer()
    _LENGTH.pack_into(data, 0, len(data) - _LENGTH.size)
    result = bytes(data)
    data.release()
    return result


async def read_frame(reader: asyncio.StreamReader) -> tuple | None:
    """The next message, None at the end of the stream."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        (size,) = _LENGTH.unpack(head)
        if size > MAX_FRAME:
            raise ConnectionError(f"control frame of {size} bytes")
        return pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("the engine closed the control channel")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _result(answer: tuple) -> Any:
    _, ok, value = answer
    if ok:
        return value
    code, message = value
    raise ServerError(Code(code), message)


class SyncCaller:
    """Blocking calls on the worker's synchronous control socket, for the
    server API's plain methods (the front ends call them in line). Thread
    safe (one call at a time). Raises ServerError as the engine did, and
    ServerError(UNAVAILABLE) when the engine is gone."""

    TIMEOUT_SECS = 30.0  # the engine answers these at once; beyond this it is stuck

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(self.TIMEOUT_SECS)
        self.sock = sock
        self._lock = threading.Lock()
        self._ids = 0

    def call(self, name: str, *args: Any) -> Any:
        with self._lock:
            self._ids += 1
            try:
                self.sock.sendall(frame((self._ids, name, args)))
                (size,) = _LENGTH.unpack(_recv_exactly(self.sock, _LENGTH.size))
                answer = pickle.loads(_recv_exactly(self.sock, size))
            except OSError:
                raise ServerError(Code.UNAVAILABLE, "the inference engine is not reachable") \
                    from None
        return _result(answer)


class AsyncCaller:
    """Calls on the worker's asynchronous control socket (model control,
    which may take seconds, and records too large for the ring), and the
    engine's notices on it. Event-loop thread only."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_notice) -> None:
        self.reader = reader
        self.writer = writer
        self._on_notice = on_notice  # on_notice(name, args) for messages with call id 0
        self._waiting: dict[int, asyncio.Future] = {}
        self._ids = 0
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def call(self, name: str, *args: Any) -> Any:
        self._ids += 1
        future = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = future
        self.send((self._ids, name, args))
        return _result(await future)

    def send(self, message: tuple) -> None:
        self.writer.write(frame(message))

    async def _read(self) -> None:
        while True:
            message = await read_frame(self.reader)
            if message is None:
                break
            if message[0] == 0:
                self._on_notice(message[1], message[2])
                continue
            future = self._waiting.pop(message[0], None)
            if future is not None and not future.done():
                future.set_result(message)
        for future in self._waiting.values():
            if not future.done():
                future.set_result((0, False, (int(Code.UNAVAILABLE),
                                              "the inference engine is not reachable")))
        self._waiting.clear()
        self._on_notice("engine-gone", ())
