"""The load generator: a few worker processes, each an event loop holding its
share of the concurrent requests, closed loop (a connection sends its next
request as soon as its answer is in).

- HTTP: one keep-alive connection per concurrent request, an
  ``asyncio.Protocol`` that writes the prebuilt request bytes and parses just
  the status line and Content-Length of the answer; uvloop when installed.
- gRPC: one channel per process, one task per concurrent request calling
  ``GRPCService.Infer`` with the prebuilt serialized request, or with ``streaming``
  writing it to a ``StreamInfer`` stream of its own and reading the answer.

Each worker records (start, end) of every request in ``time.perf_counter_ns``
(CLOCK_MONOTONIC, the same clock in every process), send and receive times,
failures and its own CPU time; the parent collects and resets them once per
window and reads a shared completion counter for live progress.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from .target import GRPC_INFER, GRPC_STREAM_INFER, PerfError

START_TIMEOUT_S = 30.0
COLLECT_TIMEOUT_S = 30.0
RECONNECT_DELAY_S = 0.05
GRPC_CALL_TIMEOUT_S = 60.0


@dataclass
class LoadSpec:
    protocol: str        # "http" or "grpc"
    host: str
    port: int
    request: bytes       # the whole HTTP request, or the serialized gRPC InferRequest
    streaming: bool = False   # gRPC: StreamInfer, one stream per concurrent request


@dataclass
class Collected:
    """What the workers recorded since the previous collection."""
    starts_ns: array = field(default_factory=lambda: array("q"))
    ends_ns: array = field(default_factory=lambda: array("q"))
    failed: int = 0
    first_error: str = ""
    send_ns: int = 0     # summed over successful requests
    recv_ns: int = 0
    cpu_s: list[float] = field(default_factory=list)   # per process, since last collection
    wall_s: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.ends_ns)


# -- worker side ----------------------------------------------------------------------

class _Recorder:
    """Per-process request records, handed to the parent and reset on collect."""

    def __init__(self, counters, index: int) -> None:
        self.counters, self.index = counters, index
        self.reset()
        self.cpu_mark = time.process_time()
        self.wall_mark = time.perf_counter()

    def reset(self) -> None:
        self.starts, self.ends = array("q"), array("q")
        self.failed, self.first_error = 0, ""
        self.send_ns = self.recv_ns = 0

    def success(self, start: int, end: int, send_ns: int, recv_ns: int) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.send_ns += send_ns
        self.recv_ns += recv_ns
        self.counters[self.index] += 1

    def failure(self, message: str) -> None:
        self.failed += 1
        if not self.first_error:
            self.first_error = message
        self.counters[self.index] += 1

    def take(self) -> dict:
        cpu, wall = time.process_time(), time.perf_counter()
        out = {"starts": self.starts.tobytes(), "ends": self.ends.tobytes(),
               "failed": self.failed, "first_error": self.first_error,
               "send_ns": self.send_ns, "recv_ns": self.recv_ns,
               "cpu_s": cpu - self.cpu_mark, "wall_s": wall - self.wall_mark}
        self.cpu_mark, self.wall_mark = cpu, wall
        self.reset()
        return out


def _nv_status_message(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"nv-status":
            text = value.strip().decode("latin-1")
            marker = 'msg: "'
            if marker in text:
                return text.split(marker, 1)[1].rsplit('"', 1)[0]
            return text
    return ""


CHUNKED = -2   # an answer framed by Transfer-Encoding: chunked


def _header_value(head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case, with its colon) in a response head."""
    at = head.find(b"\r\n" + name)   # the usual spellings first: no lower() per answer
    if at < 0:
        at = head.find(b"\r\n" + name.title())
        if at < 0:
            lower = head.lower()
            at = lower.find(b"\r\n" + name)
            if at < 0:
                return None
    stop = head.find(b"\r\n", at + 2)
    return head[at + 2 + len(name):stop if stop >= 0 else len(head)].strip()


def _answer_length(head: bytes, end_of_head: int) -> int:
    """Bytes of the whole answer (head included), or CHUNKED."""
    length = _header_value(head, b"content-length:")
    if length is not None:
        return end_of_head + 4 + int(length)
    encoding = _header_value(head, b"transfer-encoding:")
    if encoding is not None and b"chunked" in encoding.lower():
        return CHUNKED
    return end_of_head + 4


def _chunked_length(buffer: bytearray, body_start: int) -> int:
    """Bytes up to the end of a complete chunked body starting at
    ``body_start``, or -1 while it is incomplete."""
    pos = body_start
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size = int(bytes(buffer[pos:eol]).split(b";", 1)[0], 16)
        if size == 0:
            end = buffer.find(b"\r\n\r\n", eol)   # after the (usually absent) trailers
            return -1 if end < 0 else end + 4
        pos = eol + 2 + size + 2
        if pos > len(buffer):
            return -1


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection sending the same request in a closed loop."""

    def __init__(self, request: bytes, recorder: _Recorder, on_lost) -> None:
        self.request, self.recorder, self.on_lost = request, recorder, on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need = -1          # bytes of the whole answer once its head is parsed
        self.status = b""
        self.head = b""
        self.start = self.send_ns = self.first_byte = 0
        self.stopping = False
        self.in_flight = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        if self.stopping:
            self.transport.close()
            return
        self.first_byte = 0
        self.in_flight = True
        start = time.perf_counter_ns()
        self.transport.write(self.request)
        self.start, self.send_ns = start, time.perf_counter_ns() - start

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        if not self.first_byte:
            self.first_byte = now
        buffer = self.buffer
        buffer += data
        while True:
            if self.need == -1:
                end_of_head = buffer.find(b"\r\n\r\n")
                if end_of_head < 0:
                    return
                head = bytes(buffer[:end_of_head])
                self.status, self.head = head[9:12], head
                self.need = _answer_length(head, end_of_head)
            if self.need == CHUNKED:
                size = _chunked_length(buffer, len(self.head) + 4)
                if size < 0:
                    return
            else:
                size = self.need
                if len(buffer) < size:
                    return
            del buffer[:size]
            self.need = -1
            end = time.perf_counter_ns()
            self.in_flight = False
            if self.status == b"200":
                self.recorder.success(self.start, end, self.send_ns, end - self.first_byte)
            else:
                message = _nv_status_message(self.head) or self.head.split(b"\r\n", 1)[0].decode(
                    "latin-1")
                self.recorder.failure(f"HTTP {self.status.decode()}: {message}")
            self._send()
            if not buffer:
                return

    def connection_lost(self, exc) -> None:
        if self.in_flight and not self.stopping:
            self.recorder.failure(f"connection lost: {exc or 'closed by the server'}")
        self.on_lost(self)


class _HttpLoad:
    def __init__(self, spec: LoadSpec, recorder: _Recorder) -> None:
        self.spec, self.recorder = spec, recorder
        self.connections: set[_HttpConnection] = set()
        self.wanted = 0
        self.connecting = 0

    def set_concurrency(self, n: int) -> None:
        self.wanted = n
        active = [c for c in self.connections if not c.stopping]
        for conn in active[n:]:
            conn.stopping = True
            if not conn.in_flight and conn.transport is not None:
                conn.transport.close()
        for _ in range(n - len(active) - self.connecting):
            self._open()

    def _open(self, delay: float = 0.0) -> None:
        self.connecting += 1
        asyncio.get_running_loop().create_task(self._connect(delay))

    async def _connect(self, delay: float) -> None:
        failed = False
        try:
            if delay:
                await asyncio.sleep(delay)
            if sum(1 for c in self.connections if not c.stopping) >= self.wanted:
                return
            await asyncio.get_running_loop().create_connection(
                lambda: self._register(_HttpConnection(self.spec.request, self.recorder,
                                                       self._lost)),
                self.spec.host, self.spec.port)
        except OSError as exc:
            self.recorder.failure(f"cannot connect to {self.spec.host}:{self.spec.port}: {exc}")
            failed = True
        finally:
            self.connecting -= 1
        if failed:
            self._open(RECONNECT_DELAY_S)

    def _register(self, conn: _HttpConnection) -> _HttpConnection:
        self.connections.add(conn)
        return conn

    def _lost(self, conn: _HttpConnection) -> None:
        self.connections.discard(conn)
        if not conn.stopping and self.wanted:
            self._open(RECONNECT_DELAY_S)

    async def stop(self) -> None:
        self.set_concurrency(0)
        deadline = time.monotonic() + 5
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.transport.abort()


class _GrpcLoad:
    def __init__(self, spec: LoadSpec, recorder: _Recorder) -> None:
        import grpc.aio

        from pyserver.protos import grpc_service_pb2, request_status_pb2

        self.spec, self.recorder = spec, recorder
        self.channel = grpc.aio.insecure_channel(f"{spec.host}:{spec.port}")
        self.call = self.channel.unary_unary(GRPC_INFER)   # bytes in, bytes out
        self.parse = grpc_service_pb2.InferResponse.FromString
        self.success = request_status_pb2.SUCCESS
        self.tasks: list[tuple[asyncio.Task, list[bool]]] = []

    def set_concurrency(self, n: int) -> None:
        live = [t for t in self.tasks if not t[1][0]]
        for _, stop in live[n:]:
            stop[0] = True
        for _ in range(n - len(live)):
            stop = [False]
            self.tasks.append((asyncio.get_running_loop().create_task(self._loop(stop)), stop))
        self.tasks = [t for t in self.tasks if not t[0].done()]

    def _stream(self):
        return self.channel.stream_stream(GRPC_STREAM_INFER)() if self.spec.streaming else None

    async def _loop(self, stop: list[bool]) -> None:
        import grpc

        request, call, recorder = self.spec.request, self.call, self.recorder
        stream = self._stream()
        while not stop[0]:
            start = time.perf_counter_ns()
            try:
                if stream is None:
                    reply = await call(request, timeout=GRPC_CALL_TIMEOUT_S)
                else:
                    await stream.write(request)
                    reply = await stream.read()
                failure = "gRPC StreamInfer ended by the server" if reply is grpc.aio.EOF else ""
            except grpc.RpcError as exc:
                failure = f"gRPC {exc.code().name}: {exc.details()}"
            if failure:
                recorder.failure(failure)
                await asyncio.sleep(RECONNECT_DELAY_S)
                stream = self._stream()
                continue
            received = time.perf_counter_ns()
            response = self.parse(reply)
            end = time.perf_counter_ns()
            if response.request_status.code == self.success:
                recorder.success(start, end, 0, end - received)
            else:
                recorder.failure(response.request_status.msg or "request failed")
        if stream is not None:
            await stream.done_writing()

    async def stop(self) -> None:
        self.set_concurrency(0)
        if self.tasks:
            await asyncio.wait([t for t, _ in self.tasks], timeout=5)
        for task, _ in self.tasks:
            task.cancel()
        await self.channel.close()


def _worker_main(commands: Connection, replies: Connection, spec: LoadSpec, counters,
                 index: int) -> None:
    """A load process: obeys ("set", n), ("collect",) and ("stop",) from the
    parent. Commands arrive on a pipe the event loop watches (uvloop makes it
    non-blocking: fine for messages this small); replies, large, go back on a
    pipe of their own that stays blocking."""
    if spec.protocol == "http":
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass

    async def run() -> None:
        recorder = _Recorder(counters, index)
        load = _HttpLoad(spec, recorder) if spec.protocol == "http" else _GrpcLoad(spec, recorder)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_command() -> None:
            try:
                command = commands.recv()
            except (EOFError, OSError):   # the parent is gone
                command = ("stop",)
            if command[0] == "set":
                load.set_concurrency(command[1])
            elif command[0] == "collect":
                replies.send(recorder.take())
            elif command[0] == "stop":
                loop.remove_reader(commands.fileno())
                done.set()

        loop.add_reader(commands.fileno(), on_command)
        replies.send(("ready", os.getpid()))
        await done.wait()
        await load.stop()

    asyncio.run(run())


# -- parent side ------------------------------------------------------------------------

class LoadManager:
    """``processes`` worker processes; concurrency is split evenly between them."""

    def __init__(self, spec: LoadSpec, processes: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")   # no fork after grpc or threads
        self.processes = max(1, processes)
        self.counters = ctx.RawArray("q", self.processes)
        self.commands: list[Connection] = []
        self.replies: list[Connection] = []
        self.workers = []
        for index in range(self.processes):
            command_reader, command_writer = ctx.Pipe(duplex=False)
            reply_reader, reply_writer = ctx.Pipe(duplex=False)
            worker = ctx.Process(target=_worker_main,
                                 args=(command_reader, reply_writer, spec, self.counters, index),
                                 daemon=True, name=f"pyserver-perf-load-{index}")
            worker.start()
            command_reader.close()
            reply_writer.close()
            self.commands.append(command_writer)
            self.replies.append(reply_reader)
            self.workers.append(worker)
        for replies in self.replies:
            try:
                if not replies.poll(START_TIMEOUT_S):
                    raise EOFError
                replies.recv()
            except (EOFError, OSError):
                self.close()
                raise PerfError("a load process did not start") from None
        self.concurrency = 0

    def set_concurrency(self, n: int) -> None:
        """Split ``n`` concurrent requests over the processes."""
        self.concurrency = n
        for index, commands in enumerate(self.commands):
            commands.send(("set", n // self.processes + (1 if index < n % self.processes else 0)))

    def completed(self) -> int:
        """Requests finished (or failed) since start, for live progress."""
        return sum(self.counters)

    def collect(self) -> Collected:
        """Everything recorded since the previous collection, merged."""
        for commands in self.commands:
            commands.send(("collect",))
        out = Collected()
        for replies in self.replies:
            if not replies.poll(COLLECT_TIMEOUT_S):
                raise PerfError("a load process stopped answering")
            part = replies.recv()
            out.starts_ns.frombytes(part["starts"])
            out.ends_ns.frombytes(part["ends"])
            out.failed += part["failed"]
            out.first_error = out.first_error or part["first_error"]
            out.send_ns += part["send_ns"]
            out.recv_ns += part["recv_ns"]
            out.cpu_s.append(part["cpu_s"])
            out.wall_s = max(out.wall_s, part["wall_s"])
        return out

    def close(self) -> None:
        for commands in self.commands:
            try:
                commands.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for worker in self.workers:
            worker.join(max(0.1, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join(2)
        for pipe in self.commands + self.replies:
            pipe.close()

    def __enter__(self) -> "LoadManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
