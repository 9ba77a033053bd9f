"""What every HTTP/1.1 parser behind the front end shares: the request cycle
the API layer sees, the limits, and a connection base class with dispatch,
flow control, the read/idle/write timeouts, the body memory budget and a
lingering close, and TLS (the handshake is the connection's first phase).

A parser module subclasses ``HttpConnection``, feeds bytes to its parser in
``data_received`` (after ``note_read``), marks the phases (``begin_request``,
``begin_body``, ``become_idle``), calls ``dispatch`` / ``reject``, and frames
answers in ``send_response``. Requests on one connection are answered in
order.

With TLS, the connection is accepted as plain TCP, counted against the
connection limit and swept like any other, then upgraded with
``loop.start_tls``: a handshake that fails (a plain-HTTP client, a missing
or unknown client certificate) or takes longer than the header timeout just
ends that connection.

Timeouts cost no timer per request: each connection records when its phase
began, and one ``TimeoutSweep`` per listener looks at every connection a few
times a second. A timeout counts only the client's turn: while a request is
being answered, or reading is paused for flow control, the clock restarts.
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Protocol as TypingProtocol, Sequence, Union

from pyserver.process_limits import BodyBudget

if TYPE_CHECKING:
    from pyserver.workers.tally import Tally

log = logging.getLogger("pyserver.http")

Headers = list[tuple[bytes, bytes]]
# A response body: one buffer, or parts sent in order (bytes, or memoryviews of
# unsigned bytes, so that len() is the byte count): the parts are not joined into
# one copy first, and a large one (an output tensor) goes to the socket as it is.
Body = Union[bytes, bytearray, memoryview, Sequence[Union[bytes, memoryview]]]
REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_TEXT = (b"content-type", b"text/plain")
RETRY_AFTER = (b"retry-after", b"1")

# The reading phase of a connection (what it waits for from the client).
IDLE = 0      # between requests (or before the first)
HEADERS = 1   # a request's line and headers are arriving
BODY = 2      # its body is arriving
LINGER = 3    # an answer was sent and our side shut; discarding input until the client closes
HANDSHAKE = 4  # TLS: the handshake is under way (bounded by the header timeout)

# After a TLS connection is closed, how long its close_notify exchange may take.
TLS_SHUTDOWN_SECS = 2.0

# Test-only (the memory-growth check's control case): bytes kept forever per
# request dispatched. Off (0) unless the environment sets it.
_TEST_LEAK_BYTES = int(os.environ.get("PYSERVER_TEST_LEAK_BYTES_PER_REQUEST", "0") or 0)
_TEST_LEAKED: list[bytes] = []


@dataclass
class HttpLimits:
    """Bounds of one HTTP listener. A timeout of 0 disables it;
    ``max_connections`` 0 means no limit; ``body_budget`` None means no
    memory budget (each body is still bounded by ``max_body_bytes``)."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    idle_timeout_secs: float = 75.0         # keep-alive: no new request this long
    header_timeout_secs: float = 30.0       # a request's line and headers, in all
    body_timeout_secs: float = 60.0         # the longest gap while a body arrives
    min_body_bytes_per_sec: float = 1024.0  # after body_timeout_secs, the slowest body accepted
    write_timeout_secs: float = 60.0        # a client that reads none of its answer this long
    linger_secs: float = 2.0                # after an error answer, input discarded this long
    max_connections: int = 0
    body_budget: BodyBudget | None = None
    # With front-end workers: the open connections of every worker process
    # (a pyserver.workers.tally.Tally), which max_connections bounds.
    connection_tally: Tally | None = None


def clean_header_value(value: bytes) -> bytes:
    """A response header value with CR and LF replaced by spaces: text that came
    from a request or a model (an error message) cannot split the response."""
    if b"\n" in value or b"\r" in value:
        return value.replace(b"\r", b" ").replace(b"\n", b" ")
    return value


class HeaderBlock:
    """Response headers framed once, for answers that repeat them (an API's
    fixed content type, a plan's answers): ``pairs`` as ``respond`` takes
    them, ``lines`` their wire form ("name: value\\r\\n" each). Immutable;
    share it freely."""

    __slots__ = ("pairs", "lines")

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        self.pairs: Headers = [(name, clean_header_value(value)) for name, value in pairs]
        self.lines = b"".join(b"%s: %s\r\n" % pair for pair in self.pairs)

    def __iter__(self):
        return iter(self.pairs)


def body_length(body: Body) -> int:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return len(body)
    return sum(map(len, body))


class HttpApp(TypingProtocol):
    def handle(self, cycle: "RequestCycle") -> Awaitable[None] | None:
        """Answers ``cycle`` now or later (through cycle.respond)."""


class RequestCycle:
    """One request and the means to answer it exactly once."""

    __slots__ = ("method", "path", "query", "headers", "body", "_connection", "responded",
                 "reserved", "inflight", "keep_alive")

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
        self.reserved = 0  # bytes of the body budget this request holds
        # The app's handle on work started for this request (``cancel()``),
        # called if the connection is lost before the answer is sent.
        self.inflight = None
        # Whether the client keeps the connection open after this answer
        # (the parser sets it once the request is read).
        self.keep_alive = False

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

    def respond(self, status: int, headers: Headers | HeaderBlock, body: Body = b"") -> None:
        """Sends the response: ``headers`` as pairs or prebuilt, the body as
        one buffer or parts (see ``Body``; memoryviews must stay unchanged
        until the transport has sent them, as the runtime's output buffers
        do). A no-op after the client went away."""
        if self.responded:
            return
        self.responded = True
        if self.reserved:
            self._connection.release_body(self)
        self._connection.send_response(self, status, headers, body)


class HttpConnection(asyncio.Protocol):
    """One client connection; the parser-independent half."""

    def __init__(self, app: HttpApp, limits: HttpLimits, connections: set,
                 tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.limits = limits
        self.connections = connections
        self.tls = tls
        self._handshake: asyncio.Task | None = None
        # TLS: what the client sent with its last handshake flight, before
        # start_tls handed over the TLS transport (replayed then).
        self._early_data: list[bytes] = []
        self._early_eof = False
        self.transport: asyncio.Transport | None = None
        self.cycle: RequestCycle | None = None  # the request being answered
        self._loop = asyncio.get_running_loop()
        self._reading_paused = False
        self._writing_paused = False
        self.closing = False
        self.phase = IDLE
        self.phase_since = self._loop.time()
        self.bytes_read = 0
        self.last_read = self.phase_since
        self._phase_bytes = 0          # bytes_read when the phase began
        self._write_paused_since = 0.0
        self.requests_begun = 0
        self.reserved = 0              # body budget held by this connection's requests

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        limit = self.limits.max_connections
        tally = self.limits.connection_tally
        if limit and (len(self.connections) if tally is None else tally.total()) >= limit:
            self._refuse(transport, limit)
            return
        self.connections.add(self)
        if tally is not None:
            tally.set_mine(len(self.connections))
        self.phase_since = self.last_read = self._loop.time()
        if self.tls is not None:
            self.phase = HANDSHAKE
            self._handshake = self._loop.create_task(self._start_tls(transport))

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        """Upgrades the accepted TCP connection to TLS; from then on the
        TLS transport is the connection's. A failed or timed-out handshake
        ends the connection (logged at debug level only: any port scanner
        or plain-HTTP client causes one)."""
        timeout = self.limits.header_timeout_secs
        try:
            transport = await self._loop.start_tls(
                raw, self, self.tls, server_side=True,
                ssl_handshake_timeout=timeout + 1.0 if timeout > 0 else None,
                ssl_shutdown_timeout=TLS_SHUTDOWN_SECS)
        except Exception as exc:  # noqa: BLE001 - every failure ends only this connection
            log.debug("TLS handshake failed: %s", exc)
            self.transport = None
            self._forget()
            return
        finally:
            self._handshake = None
        if transport is None or self.transport is None:
            # The client went, or we aborted (timeout, shutdown), as the
            # handshake ended.
            if transport is not None:
                transport.abort()
            self.transport = None
            self._forget()
            return
        self.transport = transport
        self._enter(IDLE)
        if self.closing:
            self.close()
            return
        early, self._early_data = self._early_data, []
        for chunk in early:
            self.data_received(chunk)
        if self._early_eof:
            self.client_done_sending()

    def hold_early_data(self, data: bytes) -> None:
        """For parsers' data_received in the HANDSHAKE phase: keeps ``data``
        until the TLS transport is handed over (the client's first request
        may come with its last handshake message, before start_tls returns)."""
        self._early_data.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone (reset, or closed by us): the request
        being answered is cancelled if it is still queued; requests behind
        it are never dispatched."""
        self._forget()
        self.transport = None
        self._release_all()
        self.cancel_inflight()

    def eof_received(self) -> bool | None:
        if self.phase == HANDSHAKE:
            self._early_eof = True
            return None
        keep_open = self.client_done_sending()
        # Over TLS the transport closes after the client's close_notify
        # whatever is returned (and asyncio warns about True).
        return None if self.tls is not None else keep_open

    def client_done_sending(self) -> bool | None:
        """The client shut its side (a FIN). As nginx and uvicorn take it,
        the client is gone: the request being answered is cancelled if it
        is still queued (a running one is answered), requests pipelined
        behind it are never dispatched, and the connection closes after the
        answer under way. A request cut short gets no answer. Returns True
        to keep the connection open for that answer."""
        if self.cycle is not None and self.phase != LINGER:
            self.closing = True
            self.cancel_inflight()
            return True
        return None

    def cancel_inflight(self) -> None:
        """Cancels the request being answered if it is still queued."""
        cycle = self.cycle
        if cycle is not None and not cycle.responded and cycle.inflight is not None:
            try:
                cycle.inflight.cancel()
            except Exception:
                log.exception("cancelling the request of a lost connection failed")

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._write_paused_since = self._loop.time()
        self.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.writable_again()

    def writable_again(self) -> None:
        """The client read enough of what was sent: go on with the work
        held back while writing was paused (parsers with queued requests
        override this)."""
        if self.cycle is None:
            self.resume_reading()

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    # -- for parser subclasses -----------------------------------------------

    def send_response(self, cycle: RequestCycle, status: int, headers: Headers | HeaderBlock,
                      body: Body) -> None:
        raise NotImplementedError

    def reject(self, status: int, message: str, headers: Headers = ()) -> None:
        """Answers the request being read (or a request that never parsed)
        with ``status`` once the ones before it are answered, then closes."""
        raise NotImplementedError

    def note_read(self, size: int) -> None:
        self.bytes_read += size
        self.last_read = self._loop.time()

    def begin_request(self) -> None:
        self.requests_begun += 1
        self._enter(HEADERS)

    def begin_body(self) -> None:
        self._enter(BODY)

    def become_idle(self) -> None:
        self._enter(IDLE)

    def _enter(self, phase: int) -> None:
        self.phase = phase
        self.phase_since = self._loop.time()
        self._phase_bytes = self.bytes_read

    def dispatch(self, cycle: RequestCycle) -> None:
        """Hands a complete request to the app."""
        self.cycle = cycle
        if _TEST_LEAK_BYTES:
            _TEST_LEAKED.append(bytes(_TEST_LEAK_BYTES))
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

    # -- the body memory budget ----------------------------------------------

    def reserve_body(self, cycle: RequestCycle, size: int) -> bool:
        """Takes ``size`` more bytes of the budget for ``cycle``'s body;
        False (and a 503 answer under way) when the budget is spent."""
        budget = self.limits.body_budget
        if budget is None or size <= 0:
            return True
        if not budget.try_reserve(size):
            log.warning("refusing a request body: the memory budget of %d bytes for request "
                        "bodies is spent", budget.limit)
            self.reject(503, f"the server holds too many request bodies in memory (budget "
                             f"{budget.limit} bytes); retry later", [RETRY_AFTER])
            return False
        cycle.reserved += size
        self.reserved += size
        return True

    def grow_body(self, cycle: RequestCycle, chunk: bytes) -> bool:
        """Appends ``chunk`` to the body within the size limit and the
        budget; False once the request was refused (answer under way)."""
        data = cycle.body
        size = len(data) + len(chunk)
        if size > self.limits.max_body_bytes:
            self.reject(413, self.body_limit_message())
            return False
        if size > cycle.reserved and not self.reserve_body(
                cycle, max(size - cycle.reserved, 65536)):
            return False
        data += chunk
        return True

    def release_body(self, cycle: RequestCycle) -> None:
        if self.reserved and self.limits.body_budget is not None:
            self.limits.body_budget.release(cycle.reserved)
            self.reserved -= cycle.reserved
        cycle.reserved = 0

    def _release_all(self) -> None:
        if self.reserved and self.limits.body_budget is not None:
            self.limits.body_budget.release(self.reserved)
        self.reserved = 0

    # -- connection management ----------------------------------------------

    def _forget(self) -> None:
        self.connections.discard(self)
        if self.limits.connection_tally is not None:
            self.limits.connection_tally.set_mine(len(self.connections))

    def shutdown(self) -> None:
        """Closes now if idle, else after the current response."""
        self.closing = True
        if self.cycle is None:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self._forget()
        self._release_all()

    def abort(self) -> None:
        """Closes at once, dropping what is unsent."""
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self._forget()
        self._release_all()

    def linger_close(self) -> None:
        """Closes after an answer the client may not have waited for (an
        error before its request was read in full): sends our FIN after the
        answer and discards input until the client closes or linger_secs
        pass, so that our close does not reset the connection under the
        answer."""
        transport = self.transport
        if transport is None:
            return
        self._release_all()
        if self.limits.linger_secs <= 0 or not transport.can_write_eof():
            self.close()
            return
        self._enter(LINGER)
        transport.write_eof()
        self.resume_reading()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def check_timeouts(self, now: float) -> None:
        """Called by the sweep: ends the connection if the client has taken
        too long over its turn."""
        if self.transport is None:
            return
        limits = self.limits
        phase = self.phase
        if phase == LINGER:
            if now - self.phase_since > limits.linger_secs:
                self.abort()
            return
        if phase == HANDSHAKE:
            if limits.header_timeout_secs and now - self.phase_since > limits.header_timeout_secs:
                self.abort()
            return
        if self._writing_paused:
            if limits.write_timeout_secs and \
                    now - self._write_paused_since > limits.write_timeout_secs:
                log.warning("closing a connection whose client read none of its answer "
                            "in %.0f s", limits.write_timeout_secs)
                self.abort()
            return
        if self.cycle is not None or self._reading_paused:
            self.phase_since = now  # our turn: the client's clock restarts afterwards
            self._phase_bytes = self.bytes_read
            return
        elapsed = now - self.phase_since
        if phase == IDLE:
            limit = limits.idle_timeout_secs if self.requests_begun else \
                limits.header_timeout_secs
            if limit and elapsed > limit:
                self.close()
        elif phase == HEADERS:
            if limits.header_timeout_secs and elapsed > limits.header_timeout_secs:
                self.reject(408, f"request headers not received within "
                                 f"{limits.header_timeout_secs:g} s")
        elif phase == BODY and limits.body_timeout_secs:
            gap = now - max(self.last_read, self.phase_since)
            slow = (elapsed > limits.body_timeout_secs and
                    self.bytes_read - self._phase_bytes < limits.min_body_bytes_per_sec * elapsed)
            if gap > limits.body_timeout_secs:
                self.reject(408, f"request body: nothing received for "
                                 f"{limits.body_timeout_secs:g} s")
            elif slow:
                self.reject(408, f"request body arriving slower than "
                                 f"{limits.min_body_bytes_per_sec:g} bytes/s")

    def _refuse(self, transport: asyncio.Transport, limit: int) -> None:
        log.warning("refusing a connection: the limit of %d open connections is reached", limit)
        self.transport = None
        if self.tls is not None:
            # No plain-text answer can reach a TLS client, and a handshake
            # only to say 503 is what an attacker at the limit would want.
            transport.abort()
            return
        text = b"the server has too many open connections; retry later"
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
                        b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(text), text))
        transport.close()


class TimeoutSweep:
    """Checks the timeouts of every connection in ``connections`` a few
    times a second (often enough for the shortest timeout). Event-loop
    thread only; ``stop`` ends it."""

    def __init__(self, connections: set, limits: HttpLimits) -> None:
        self.connections = connections
        timeouts = [t for t in (limits.idle_timeout_secs, limits.header_timeout_secs,
                                limits.body_timeout_secs, limits.write_timeout_secs,
                                limits.linger_secs) if t > 0]
        self.interval = min(1.0, max(0.05, min(timeouts, default=4.0) / 4))
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = self._loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self._loop.time()
        for connection in list(self.connections):
            try:
                connection.check_timeouts(now)
            except Exception:
                log.exception("connection timeout check failed")
                connection.abort()
        self._handle = self._loop.call_later(self.interval, self._tick)
