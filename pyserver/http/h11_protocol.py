"""HTTP/1.1 with h11, the reference parser: one protocol object per
connection (connection.HttpConnection does dispatch, flow control and
timeouts). The next request is parsed only after the current one is answered.
"""

from __future__ import annotations

import logging

import h11

from pyserver.http.connection import REASONS, Headers, HttpConnection, RequestCycle

log = logging.getLogger("pyserver.http")

_TEXT = (b"content-type", b"text/plain")


class H11Connection(HttpConnection):
    """One client connection parsed by h11."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conn = h11.Connection(h11.SERVER,
                                   max_incomplete_event_size=self.limits.max_header_bytes)
        self._reading: RequestCycle | None = None  # request whose body is arriving

    def data_received(self, data: bytes) -> None:
        self.cancel_idle_timer()
        self.conn.receive_data(data)
        self._process()
        if self.cycle is None:
            self.arm_idle_timer()

    def eof_received(self) -> bool | None:
        self.conn.receive_data(b"")
        self._process()
        return None

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
                self.pause_reading()
                return
            kind = type(event)
            if kind is h11.Request:
                if not self._start(event):
                    return
            elif kind is h11.Data:
                body = self._reading.body
                body += event.data
                if self.body_too_large(len(body)):
                    self._reject(413, self.body_limit_message())
                    return
            elif kind is h11.EndOfMessage:
                cycle, self._reading = self._reading, None
                self.dispatch(cycle)
                return
            elif kind is h11.ConnectionClosed:
                self.close()
                return

    def _start(self, event: h11.Request) -> bool:
        self._reading = RequestCycle(self, event.method, event.target, list(event.headers))
        length = self._reading.header(b"content-length")
        if length is not None and length.isdigit() and self.body_too_large(int(length)):
            self._reject(413, self.body_limit_message(int(length)))
            return False
        if self.conn.they_are_waiting_for_100_continue and self.transport is not None:
            self.transport.write(self.conn.send(h11.InformationalResponse(status_code=100,
                                                                          headers=[])))
        return True

    def send_response(self, cycle: RequestCycle, status: int, headers: Headers,
                      body: bytes) -> None:
        if self.transport is None or cycle is not self.cycle:
            return
        headers = headers + [(b"content-length", str(len(body)).encode())]
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
        if self.conn.our_state is h11.MUST_CLOSE or self.closing:
            self.close()
            return
        if self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        elif self.conn.their_state is not h11.IDLE:
            # Answered before the body was read (an error): the rest of the
            # body would be parsed as a request, so end the connection.
            self.close()
            return
        if not self.writing_paused:
            self.resume_reading()
            if self.conn.trailing_data[0]:
                self._process()
        if self.cycle is None:
            self.arm_idle_timer()

    def _reject(self, status: int, message: str) -> None:
        """Answers a request the parser or the limits refused, then closes."""
        self.closing = True
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.cycle = self._reading or RequestCycle(self, b"", b"", [])
            self.cycle.respond(status, [_TEXT], message.encode())
        else:
            self.close()
