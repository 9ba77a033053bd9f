"""HTTP/1.1 with httptools (llhttp, in C): the fast parser beside h11, behind
the same connection interface. Responses are framed here directly.

Pipelined requests are parsed as they arrive, queued, and answered one at a
time in order; reading pauses while too many wait. A request that does not
parse (or is refused by a limit) is answered after the ones queued before
it, then the connection closes; what follows it is discarded.
"""

from __future__ import annotations

import collections

import httptools

from pyserver.http.connection import (HANDSHAKE, LINGER, REASONS, Body, HeaderBlock, Headers,
                                      HttpConnection, RequestCycle, clean_header_value)

_TEXT = (b"content-type", b"text/plain")
_MAX_PIPELINED = 16
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in REASONS.items()}
# Body parts this large go to the transport as they are (no copy into the
# joined answer); smaller ones are joined with the head into one write.
_SEPARATE_WRITE_BYTES = 64 * 1024


class HttptoolsConnection(HttpConnection):
    """One client connection parsed by httptools."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: Headers = []
        self._header_bytes = 0
        self._reading: RequestCycle | None = None
        self._waiting: collections.deque[RequestCycle] = collections.deque()
        self._failed = False       # nothing more is parsed on this connection
        self._pending_reject: tuple[int, str, Headers] | None = None

    # -- asyncio.Protocol ---------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.phase == HANDSHAKE:
            self.hold_early_data(data)
            return
        self.note_read(len(data))
        if self._failed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self._failed:
                self.reject(400, f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting.clear()  # never dispatched
        super().connection_lost(exc)

    def client_done_sending(self) -> bool | None:
        self._waiting.clear()  # the client is gone: never dispatched
        return super().client_done_sending()

    def writable_again(self) -> None:
        if self.cycle is None and self.phase != LINGER:
            self._answer_next()

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self.begin_request()
        self._url = b""
        self._headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self.limits.max_header_bytes:
            self.reject(414, "request target is too long")
            raise httptools.HttpParserError("target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self.limits.max_header_bytes:
            self.reject(431, "request headers are too large")
            raise httptools.HttpParserError("headers too large")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.begin_body()
        method = self.parser.get_method()
        cycle = RequestCycle(self, method, self._url, self._headers)
        self._reading = cycle
        if self.parser.get_http_version() == "1.1" and cycle.header(b"host") is None:
            self.reject(400, "malformed HTTP request: HTTP/1.1 needs a Host header")
            raise httptools.HttpParserError("no Host header")
        length = cycle.header(b"content-length")
        if length is not None and length.isdigit():
            declared = int(length)
            if self.body_too_large(declared):
                self.reject(413, self.body_limit_message(declared))
                raise httptools.HttpParserError("body too large")
            if not self.reserve_body(cycle, declared):
                raise httptools.HttpParserError("body budget spent")
        expect = cycle.header(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if not self.grow_body(self._reading, body):
            raise httptools.HttpParserError("body refused")

    def on_message_complete(self) -> None:
        cycle, self._reading = self._reading, None
        self.become_idle()
        cycle.keep_alive = self.parser.should_keep_alive()
        if self.cycle is None and not self._waiting:
            self.dispatch(cycle)
            return
        self._waiting.append(cycle)
        if len(self._waiting) >= _MAX_PIPELINED:
            self.pause_reading()

    # -- answers ------------------------------------------------------------

    def send_response(self, cycle: RequestCycle, status: int, headers: Headers | HeaderBlock,
                      body: Body) -> None:
        transport = self.transport
        if transport is None or cycle is not self.cycle:
            return
        keep_alive = cycle.keep_alive and not self.closing
        if type(headers) is HeaderBlock:
            lines = headers.lines
        else:
            lines = b"".join([b"%s: %s\r\n" % (name, clean_header_value(value))
                              for name, value in headers])
        status_line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        close = b"" if keep_alive else b"connection: close\r\n"
        if isinstance(body, (bytes, bytearray, memoryview)):
            if len(body) < _SEPARATE_WRITE_BYTES:
                transport.write(b"%s%scontent-length: %d\r\n%s\r\n%s" % (
                    status_line, lines, len(body), close, body))
            else:
                self._write_parts(transport, b"%s%scontent-length: %d\r\n%s\r\n" % (
                    status_line, lines, len(body), close), (body,))
        else:
            self._write_parts(transport, b"%s%scontent-length: %d\r\n%s\r\n" % (
                status_line, lines, sum(map(len, body)), close), body)
        self.cycle = None
        if not keep_alive:
            if self._failed:
                self.linger_close()
            else:
                self.close()
            return
        if self.writing_paused:
            # The client is not reading: what it queued waits until it does
            # (writable_again), so its unread answers stay within the
            # transport's high-water mark plus one answer.
            if self._reading is None and not self._waiting:
                self.become_idle()
            return
        self._answer_next()

    @staticmethod
    def _write_parts(transport, head: bytes, parts) -> None:
        """The head and the body parts in order: small parts joined with the
        head into one write, a large part written as it is."""
        pending = [head]
        for part in parts:
            if len(part) >= _SEPARATE_WRITE_BYTES:
                transport.write(b"".join(pending))
                pending.clear()
                transport.write(part)
            else:
                pending.append(part)
        if pending:
            transport.write(b"".join(pending))

    def _answer_next(self) -> None:
        """Starts on the next queued request (or queued refusal), or reads
        on."""
        if self._waiting:
            self.dispatch(self._waiting.popleft())
            if len(self._waiting) < _MAX_PIPELINED // 2 and not self.writing_paused:
                self.resume_reading()
        elif self._pending_reject is not None:
            self._answer_reject(*self._pending_reject)
        else:
            if self._reading is None:
                self.become_idle()
            self.resume_reading()

    def reject(self, status: int, message: str, headers: Headers = ()) -> None:
        self._failed = True
        if self.cycle is not None:
            # Answered once the requests queued before this one are.
            if self._pending_reject is None:
                self._pending_reject = (status, message, list(headers))
            return
        self._answer_reject(status, message, list(headers))

    def _answer_reject(self, status: int, message: str, headers: Headers) -> None:
        self._pending_reject = None
        self.closing = True
        self._waiting.clear()
        cycle = self._reading or RequestCycle(self, b"", b"", [])
        self._reading = None
        self.cycle = cycle
        cycle.respond(status, [_TEXT, *headers], message.encode())
