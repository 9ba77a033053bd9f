"""HTTP/1.1 with h11, the reference parser: one protocol object per
connection (connection.HttpConnection does dispatch, flow control and
timeouts). The next request is parsed only after the current one is answered,
so pipelined requests are answered in order up to a malformed one, then the
400 (or 413, 431) closes the connection.
"""

from __future__ import annotations

import logging

import h11

try:  # h11 keeps its body readers private; the bare-LF check needs the chunked one's state
    from h11._readers import ChunkedReader as _ChunkedReader
except ImportError:  # pragma: no cover - a future h11: the body timeout still ends the wait
    _ChunkedReader = None

from pyserver.http.connection import (HANDSHAKE, IDLE, LINGER, REASONS, Body, HeaderBlock,
                                      Headers, HttpConnection, RequestCycle, body_length)

log = logging.getLogger("pyserver.http")

_TEXT = (b"content-type", b"text/plain")
_READ_IN_FULL = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)
# Bytes of pipelined requests buffered, unparsed, before reading pauses.
_PIPELINE_BUFFER_BYTES = 64 * 1024


class H11Connection(HttpConnection):
    """One client connection parsed by h11."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conn = h11.Connection(h11.SERVER,
                                   max_incomplete_event_size=self.limits.max_header_bytes)
        self._reading: RequestCycle | None = None  # request whose body is arriving
        self._failed = False

    def data_received(self, data: bytes) -> None:
        if self.phase == HANDSHAKE:
            self.hold_early_data(data)
            return
        self.note_read(len(data))
        if self.phase == LINGER:
            return
        if self.phase == IDLE:
            self.begin_request()
        self.conn.receive_data(data)
        self._process()

    def client_done_sending(self) -> bool | None:
        if self.phase == LINGER:
            return None
        self.conn.receive_data(b"")
        if self.cycle is not None:
            # The client is gone (see HttpConnection.client_done_sending):
            # the answer under way closes the connection, and the requests
            # buffered behind it are never parsed.
            self.closing = True
            self.cancel_inflight()
            return True
        self._process()
        return None

    def _process(self) -> None:
        while self.transport is not None and self.phase != LINGER:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                # h11 hints 501 for a transfer coding it lacks; httptools says 400, and
                # a 5xx is kept for our faults.
                status = exc.error_status_hint if exc.error_status_hint < 500 else 400
                self.reject(status, f"malformed HTTP request: {exc}")
                return
            if event is h11.NEED_DATA:
                if self._bare_lf_in_chunk_size_line():
                    self.reject(400, "malformed HTTP request: a chunk-size line must end "
                                     "in CRLF")
                return
            if event is h11.PAUSED:
                # The next request waits for this one's answer. Reading goes on
                # while little is buffered, so that a reset (a client gone) is
                # seen and the request being answered can be cancelled.
                if len(self.conn.trailing_data[0]) > _PIPELINE_BUFFER_BYTES:
                    self.pause_reading()
                return
            kind = type(event)
            if kind is h11.Request:
                if not self._start(event):
                    return
            elif kind is h11.Data:
                if not self.grow_body(self._reading, event.data):
                    return
            elif kind is h11.EndOfMessage:
                cycle, self._reading = self._reading, None
                self.become_idle()
                self.dispatch(cycle)
                return
            elif kind is h11.ConnectionClosed:
                self.close()
                return

    def _bare_lf_in_chunk_size_line(self) -> bool:
        """Whether h11 waits for a chunk-size line's CRLF that a bare LF
        already ended (h11 would wait for it forever)."""
        reader = getattr(self.conn, "_reader", None)
        if _ChunkedReader is None or not isinstance(reader, _ChunkedReader):
            return False
        if reader._bytes_in_chunk or reader._bytes_to_discard or reader._reading_trailer:
            return False
        data = self.conn.trailing_data[0]
        end = data.find(b"\n")
        return end != -1 and data[end - 1:end] != b"\r"

    def _start(self, event: h11.Request) -> bool:
        self.begin_body()
        cycle = RequestCycle(self, event.method, event.target, list(event.headers))
        self._reading = cycle
        length = cycle.header(b"content-length")
        if length is not None and length.isdigit():
            declared = int(length)
            if self.body_too_large(declared):
                self.reject(413, self.body_limit_message(declared))
                return False
            if not self.reserve_body(cycle, declared):
                return False
        if self.conn.they_are_waiting_for_100_continue and self.transport is not None:
            self.transport.write(self.conn.send(h11.InformationalResponse(status_code=100,
                                                                          headers=[])))
        return True

    def send_response(self, cycle: RequestCycle, status: int, headers: Headers | HeaderBlock,
                      body: Body) -> None:
        if self.transport is None or cycle is not self.cycle:
            return
        if not isinstance(body, (bytes, bytearray, memoryview)):
            body = b"".join(body)  # the reference parser: one Data event
        headers = [*headers, (b"content-length", b"%d" % body_length(body))]
        if self.closing:
            headers.append((b"connection", b"close"))
        try:
            data = self.conn.send(h11.Response(status_code=status, headers=headers,
                                               reason=REASONS.get(status, b"")))
            if body:
                data += self.conn.send(h11.Data(data=body))
            data += self.conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            log.error("cannot send response: %s", exc)
            self.close()
            return
        self.transport.write(data)
        self.cycle = None
        their_state = self.conn.their_state
        if self.conn.our_state is h11.MUST_CLOSE or self.closing:
            if self._failed or their_state not in _READ_IN_FULL:
                self.linger_close()
            else:
                self.close()
            return
        if their_state is h11.DONE:
            self.conn.start_next_cycle()
        elif their_state is not h11.IDLE:
            # Answered before the body was read (an error): the rest of the
            # body would be parsed as a request, so end the connection.
            self.linger_close()
            return
        if self.conn.trailing_data[0]:
            self.begin_request()
        else:
            self.become_idle()
        if not self.writing_paused:
            self.writable_again()

    def writable_again(self) -> None:
        """Reads on, starting with requests already buffered (pipelined)."""
        if self.cycle is not None or self.phase == LINGER:
            return
        self.resume_reading()
        if self.conn.trailing_data[0]:
            self._process()

    def reject(self, status: int, message: str, headers: Headers = ()) -> None:
        """Answers a request the parser or the limits refused, then closes.
        h11 parses nothing while a request is answered, so no earlier
        request can be waiting."""
        self._failed = True
        self.closing = True
        if self.cycle is not None:
            return  # the answer under way closes the connection
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.cycle = self._reading or RequestCycle(self, b"", b"", [])
            self._reading = None
            self.cycle.respond(status, [_TEXT, *headers], message.encode())
        else:
            self.close()
