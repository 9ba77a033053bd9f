"""The server API as a worker process sees it: ``RemoteServer`` has the
methods and attributes of pyserver.server.InferenceServer that front ends
use, and carries each to the engine process — inference over the hop's
shared-memory rings, everything else over the control sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from pyserver.api.request import LATEST, InferenceRequest
from pyserver.api.response import InferenceResponse
from pyserver import log_settings
from pyserver.errors import ServerError, unavailable
from pyserver.server import ANSWERED, ServerOptions, ShutdownReport
from pyserver.shared_memory import CudaRegion, SystemRegion
from pyserver.workers import hop
from pyserver.workers.control import AsyncCaller, SyncCaller
from pyserver.workers.ring import Announcer, Doorbell, RingReader, RingWriter

log = logging.getLogger("pyserver.worker")

_KIND_NAMES = {None: None, SystemRegion: "system", CudaRegion: "cuda"}


class _Remote:
    """A request handed to the engine: its InferHandle."""

    __slots__ = ("server", "ticket", "request", "on_done")

    def __init__(self, server: "RemoteServer", ticket: int, request: InferenceRequest,
                 on_done) -> None:
        self.server = server
        self.ticket = ticket
        self.request = request
        self.on_done = on_done

    def cancel(self) -> bool:
        """Asks the engine to take the request out of its queue; whether it
        did shows in the answer (CANCELLED or not), which comes as usual."""
        if self.ticket in self.server._calls:
            self.server._send(hop.encode_cancel(self.ticket))
            return True
        return False


class RemoteSharedMemory:
    """The engine's shared-memory registry, as the front ends call it."""

    def __init__(self, caller: SyncCaller) -> None:
        self._caller = caller

    def register_system(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self._caller.call("shm.register_system", name, key, offset, byte_size)

    def register_cuda(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        self._caller.call("shm.register_cuda", name, raw_handle, device_id, byte_size)

    def unregister(self, kind: type | None, name: str = "") -> None:
        self._caller.call("shm.unregister", _KIND_NAMES[kind], name)

    def status(self, kind: type | None, name: str = "") -> list[dict]:
        return self._caller.call("shm.status", _KIND_NAMES[kind], name)


class RemoteServer:
    """A worker's server API. Event-loop thread only, like the server it
    stands for. ``hello`` is what the engine told the worker at start
    (id, version, start time, options); request ids for v1 status are this
    worker's own, unique across workers (``index``-th of every ``count``)."""

    def __init__(self, hello: dict, sync: SyncCaller, doorbell: Doorbell,
                 requests: RingWriter, responses: RingReader, index: int, count: int) -> None:
        self.id = hello["id"]
        self.version = hello["version"]
        self.start_ns = hello["start_ns"]
        self.options: ServerOptions = hello["options"]
        self.response_cache = None  # the engine's; its metrics are the engine's too
        self.shared_memory = RemoteSharedMemory(sync)
        self._sync = sync
        self._async: AsyncCaller | None = None
        self._doorbell = doorbell
        self._requests = requests
        self._responses = responses
        self._caches = hop.ResponseCaches()
        self._calls: dict[int, _Remote] = {}
        self._tickets = 0
        self._request_id = index + 1 - count
        self._id_stride = count
        self._backlog: deque = deque()  # records waiting for ring space, in order
        self._announcer: Announcer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.engine_gone = asyncio.Event()

    # -- plumbing ---------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop, async_caller: AsyncCaller) -> None:
        self._loop = loop
        self._async = async_caller
        self._announcer = Announcer(loop, self._doorbell,
                                    lambda: (self._requests.tail, self._responses.head),
                                    lambda: bool(self._backlog), self._responses.capacity // 4)
        loop.add_reader(self._doorbell.fileno(), self._on_doorbell)

    def detach(self) -> None:
        if self._announcer is not None:
            self._announcer.stopped = True
        if self._loop is not None:
            self._loop.remove_reader(self._doorbell.fileno())
            self._loop.remove_writer(self._doorbell.fileno())

    def _send(self, record: tuple[list, int]) -> None:
        parts, size = record
        if size > self._requests.largest_record():
            self._async.send((0, "record", (b"".join(bytes(p) for p in parts),)))
            return
        if self._backlog or not self._requests.write(parts, size):
            self._backlog.append((parts, size))
        self._announcer.schedule()  # the new tail, or that records wait for room

    def _on_doorbell(self) -> None:
        positions = self._doorbell.received()
        if self._doorbell.closed:
            self._engine_lost()
            return
        if positions is None:
            return
        tail, head, self._announcer.peer_waiting = positions
        self._requests.head = head
        for record in self._responses.records(tail):
            self._deliver(*hop.decode_response(record, self._caches))
        backlog = self._backlog
        while backlog and self._requests.write(*backlog[0]):
            backlog.popleft()
        self._announcer.schedule()  # the new heads (and any records just written)

    def deliver_record(self, record: bytes) -> None:
        """An oversized response, sent over the control socket."""
        self._deliver(*hop.decode_response(memoryview(record), self._caches))

    def _deliver(self, ticket: int, response: InferenceResponse) -> None:
        call = self._calls.pop(ticket, None)
        if call is None:
            return
        try:
            call.on_done(response)
        except Exception:
            log.exception("completion callback failed")

    def _engine_lost(self) -> None:
        """The engine is gone: every request in flight fails, and so does
        every later one; the worker process then exits."""
        if self.engine_gone.is_set():
            return
        self.engine_gone.set()
        self.detach()
        calls, self._calls = self._calls, {}
        for call in calls.values():
            try:
                call.on_done(InferenceResponse.failure(
                    call.request.model, 0, call.request.id,
                    unavailable("the inference engine stopped before the request finished")))
            except Exception:
                log.exception("completion callback failed")

    # -- inference ----------------------------------------------------------------

    def infer(self, request: InferenceRequest, on_done) -> Any:
        """As InferenceServer.infer: ``on_done(response)`` runs on this
        worker's event loop, later."""
        if self.engine_gone.is_set():
            on_done(InferenceResponse.failure(request.model, 0, request.id,
                                              unavailable("Server exiting")))
            return ANSWERED
        self._tickets += 1
        ticket = self._tickets
        try:
            record = hop.encode_request(ticket, request)
        except ServerError as exc:
            on_done(InferenceResponse.failure(request.model, 0, request.id, exc))
            return ANSWERED
        call = self._calls[ticket] = _Remote(self, ticket, request, on_done)
        self._send(record)
        return call

    async def infer_async(self, request: InferenceRequest) -> InferenceResponse:
        future = asyncio.get_running_loop().create_future()

        def done(response: InferenceResponse) -> None:
            if not future.done():
                future.set_result(response)

        call = self.infer(request, done)
        try:
            return await future
        except asyncio.CancelledError:
            call.cancel()
            raise

    def next_request_id(self) -> int:
        self._request_id += self._id_stride
        return self._request_id

    # -- everything else, answered by the engine -------------------------------------

    @property
    def state(self):
        return self._sync.call("state")

    @property
    def draining(self) -> bool:
        return self._sync.call("draining")

    @property
    def live(self) -> bool:
        return self._sync.call("live")

    @property
    def ready(self) -> bool:
        return self._sync.call("ready")

    @property
    def v1_live(self) -> bool:
        return self._sync.call("v1_live")

    @property
    def v1_ready(self) -> bool:
        return self._sync.call("v1_ready")

    def model_ready(self, model: str, version: int = LATEST) -> bool:
        return self._sync.call("model_ready", model, version)

    def model_config(self, model: str, version: int = LATEST):
        return self._sync.call("model_config", model, version)

    def model_metadata(self, model: str, version: int = LATEST):
        return self._sync.call("model_metadata", model, version)

    def model_status(self, model: str = ""):
        return self._sync.call("model_status", model)

    def statistics(self, model: str = "", version: int = 0):
        return self._sync.call("statistics", model, version)

    def index(self, ready_only: bool = False):
        return self._sync.call("index", ready_only)

    def log_settings(self) -> dict:
        return self._sync.call("log_settings")

    def update_log_settings(self, changes) -> dict:
        """The engine's to change: it applies them and hands them to every worker."""
        settings = self._sync.call("update_log_settings", dict(changes))
        log_settings.apply(log_settings.LogSettings(**settings))
        return settings

    def trace_settings(self, model: str = "") -> dict:
        return self._sync.call("trace_settings", model)

    def update_trace_settings(self, changes, model: str = "") -> dict:
        return self._sync.call("update_trace_settings", dict(changes), model)

    async def load_model(self, name: str) -> None:
        await self._async.call("load_model", name)

    async def unload_model(self, name: str) -> None:
        await self._async.call("unload_model", name)

    def begin_drain(self) -> None:
        """Draining is the engine's decision; a worker follows it."""

    async def shutdown(self):
        """Waits until every request this worker handed over is answered
        (the engine answers them all, at the latest at its exit timeout)."""
        options = self.options
        deadline = time.monotonic() + options.exit_timeout_secs + options.unload_timeout_secs + 5
        while self._calls and time.monotonic() < deadline and not self.engine_gone.is_set():
            await asyncio.sleep(0.01)
        return ShutdownReport(abandoned_requests=len(self._calls))
