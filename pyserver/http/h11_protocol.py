"""HTTP/1.1 over asyncio with h11: one protocol object per connection and
one request cycle per request.

The parser sits behind this module alone; the API layer sees a
``RequestCycle`` (method, path, query, headers, body) and answers through
``RequestCycle.respond``. Requests on one connection are answered in order:
the next request is parsed only after the current one is answered.
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol as TypingProtocol

import h11

log = logging.getLogger("pyserver.http")

Headers = list[tuple[bytes, bytes]]
_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}


@dataclass
class HttpLimits:
    max_body_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    idle_timeout_secs: float = 120.0
    high_water_bytes: int = 4 * 1024 * 1024


class HttpApp(TypingProtocol):
    def handle(self, cycle: "RequestCycle") -> Awaitable[None] | None:
        """Answers ``cycle`` now or later (through cycle.respond)."""


class RequestCycle:
    """One request and the means to answer it exactly once."""

    __slots__ = ("method", "path", "query", "headers", "body", "_protocol", "responded")

    def __init__(self, protocol: "HttpProtocol", method: bytes, target: bytes,
                 headers: Headers) -> None:
        self._protocol = protocol
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
        return self._protocol.transport is not None

    def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        """Sends the response. A no-op after the client went away."""
        if self.responded:
            return
        self.responded = True
        self._protocol.send_response(self, status, headers, body)


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, app: HttpApp, limits: HttpLimits, connections: set) -> None:
        self.app = app
        self.limits = limits
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.cycle: RequestCycle | None = None
        self._loop = asyncio.get_running_loop()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._closing = False

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None
        self._cancel_idle_timer()

    def data_received(self, data: bytes) -> None:
        self._arm_idle_timer()
        self.conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        self.conn.receive_data(b"")
        self._process()
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.cycle is None:
            self._resume_reading()

    # -- request handling ---------------------------------------------------

    def _process(self) -> None:
        while self.transport is not None:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._reject(exc.error_status_hint, f"malformed HTTP request: {exc}")
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                self._pause_reading()
                return
            kind = type(event)
            if kind is h11.Request:
                if not self._start_cycle(event):
                    return
            elif kind is h11.Data:
                body = self.cycle.body
                body += event.data
                if len(body) > self.limits.max_body_bytes:
                    self._reject(413, f"request body exceeds the limit of "
                                      f"{self.limits.max_body_bytes} bytes")
                    return
            elif kind is h11.EndOfMessage:
                self._dispatch(self.cycle)
                return
            elif kind is h11.ConnectionClosed:
                self._close()
                return

    def _start_cycle(self, event: h11.Request) -> bool:
        length = None
        for key, value in event.headers:
            if key == b"content-length":
                length = int(value)
        if length is not None and length > self.limits.max_body_bytes:
            self.cycle = RequestCycle(self, event.method, event.target, list(event.headers))
            self._reject(413, f"request body of {length} bytes exceeds the limit of "
                              f"{self.limits.max_body_bytes} bytes")
            return False
        self.cycle = RequestCycle(self, event.method, event.target, list(event.headers))
        if self.conn.they_are_waiting_for_100_continue and self.transport is not None:
            self.transport.write(self.conn.send(h11.InformationalResponse(status_code=100,
                                                                          headers=[])))
        return True

    def _dispatch(self, cycle: RequestCycle) -> None:
        try:
            pending = self.app.handle(cycle)
        except Exception:
            log.exception("request handler failed")
            cycle.respond(500, [(b"content-type", b"text/plain")], b"internal server error")
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
            cycle.respond(500, [(b"content-type", b"text/plain")], b"internal server error")

    def send_response(self, cycle: RequestCycle, status: int, headers: Headers,
                      body: bytes) -> None:
        if self.transport is None or cycle is not self.cycle:
            return
        headers = headers + [(b"content-length", str(len(body)).encode())]
        if self._closing:
            headers.append((b"connection", b"close"))
        try:
            data = self.conn.send(h11.Response(status_code=status, headers=headers,
                                               reason=_REASONS.get(status, b"")))
            if body:
                data += self.conn.send(h11.Data(data=body))
            data += self.conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            log.error("cannot send response: %s", exc)
            self._close()
            return
        self.transport.write(data)
        self.cycle = None
        if self.conn.our_state is h11.MUST_CLOSE or self._closing:
            self._close()
            return
        if self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        elif self.conn.their_state is not h11.IDLE:
            # Answered before the body was read (an error): the rest of the
            # body would be parsed as a request, so end the connection.
            self._close()
            return
        if not self._writing_paused:
            self._resume_reading()
            if self.conn.trailing_data[0]:
                self._process()

    def _reject(self, status: int, message: str) -> None:
        """Answers a request the parser or the limits refused, then closes."""
        self._closing = True
        if self.cycle is None:
            self.cycle = RequestCycle(self, b"", b"", [])
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.cycle.respond(status, [(b"content-type", b"text/plain")], message.encode())
        else:
            self._close()

    # -- connection management ----------------------------------------------

    def shutdown(self) -> None:
        """Closes now if idle, else after the current response."""
        self._closing = True
        if self.cycle is None:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.connections.discard(self)
        self._cancel_idle_timer()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        self._idle_timer = self._loop.call_later(self.limits.idle_timeout_secs, self._on_idle)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _on_idle(self) -> None:
        if self.cycle is None:
            self._close()
        else:
            self._arm_idle_timer()


async def serve_http(app: HttpApp, host: str, port: int, limits: HttpLimits,
                     connections: set) -> asyncio.AbstractServer:
    """Starts listening; returns the asyncio server."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: HttpProtocol(app, limits, connections),
                                    host, port, reuse_address=True, backlog=1024)
