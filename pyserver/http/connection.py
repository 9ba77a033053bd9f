"""What every HTTP/1.1 parser behind the front end shares: the request cycle
the API layer sees, the limits, and a connection base class with dispatch,
flow control, idle timeout and graceful close.

A parser module subclasses ``HttpConnection``, feeds bytes to its parser in
``data_received``, calls ``start_cycle`` / ``dispatch`` / ``reject``, and
frames answers in ``send_response``. Requests on one connection are answered
in order.
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import Awaitable, Protocol as TypingProtocol

log = logging.getLogger("pyserver.http")

Headers = list[tuple[bytes, bytes]]
REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_TEXT = (b"content-type", b"text/plain")


@dataclass
class HttpLimits:
    max_body_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    idle_timeout_secs: float = 120.0


class HttpApp(TypingProtocol):
    def handle(self, cycle: "RequestCycle") -> Awaitable[None] | None:
        """Answers ``cycle`` now or later (through cycle.respond)."""


class RequestCycle:
    """One request and the means to answer it exactly once."""

    __slots__ = ("method", "path", "query", "headers", "body", "_connection", "responded")

    def __init__(self, connection: "HttpConnection", method: bytes, target: bytes,
                 headers: Headers) -> None:
        self._connection = connection
        self.method = method
        path, _, query = target.partition(b"?")
        self.path = path
        self.query = query
        self.headers = headers
        self.body = bytearray()
        self.responded = False

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (``name`` in lower case)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def query_param(self, name: bytes) -> bytes | None:
        for part in self.query.split(b"&"):
            key, _, value = part.partition(b"=")
            if key == name:
                return value
        return None

    @property
    def connected(self) -> bool:
        return self._connection.transport is not None

    def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        """Sends the response. A no-op after the client went away."""
        if self.responded:
            return
        self.responded = True
        self._connection.send_response(self, status, headers, body)


class HttpConnection(asyncio.Protocol):
    """One client connection; the parser-independent half."""

    def __init__(self, app: HttpApp, limits: HttpLimits, connections: set) -> None:
        self.app = app
        self.limits = limits
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.cycle: RequestCycle | None = None  # the request being answered
        self._loop = asyncio.get_running_loop()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._writing_paused = False
        self.closing = False

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.connections.add(self)
        self.arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None
        self._cancel_idle_timer()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.cycle is None:
            self.resume_reading()

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    # -- for parser subclasses -----------------------------------------------

    def send_response(self, cycle: RequestCycle, status: int, headers: Headers,
                      body: bytes) -> None:
        raise NotImplementedError

    def dispatch(self, cycle: RequestCycle) -> None:
        """Hands a complete request to the app."""
        self.cycle = cycle
        try:
            pending = self.app.handle(cycle)
        except Exception:
            log.exception("request handler failed")
            cycle.respond(500, [_TEXT], b"internal server error")
            return
        if pending is not None:
            task = self._loop.create_task(pending)
            task.add_done_callback(lambda t, c=cycle: self._task_done(t, c))

    def _task_done(self, task: asyncio.Task, cycle: RequestCycle) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("request handler failed", exc_info=exc)
            cycle.respond(500, [_TEXT], b"internal server error")

    def body_too_large(self, size: int) -> bool:
        return size > self.limits.max_body_bytes

    def body_limit_message(self, size: int | None = None) -> str:
        what = f"request body of {size} bytes" if size is not None else "request body"
        return f"{what} exceeds the limit of {self.limits.max_body_bytes} bytes"

    # -- connection management ----------------------------------------------

    def shutdown(self) -> None:
        """Closes now if idle, else after the current response."""
        self.closing = True
        if self.cycle is None:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.connections.discard(self)
        self._cancel_idle_timer()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def arm_idle_timer(self) -> None:
        """Closes the connection if it stays idle for the idle timeout.
        Armed only while idle, so busy connections pay nothing for it."""
        if self._idle_timer is None and self.transport is not None:
            self._idle_timer = self._loop.call_later(self.limits.idle_timeout_secs,
                                                     self._on_idle)

    def cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._cancel_idle_timer()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _on_idle(self) -> None:
        self._idle_timer = None
        if self.cycle is None:
            self.close()
