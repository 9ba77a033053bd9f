"""A bare HTTP/2 client for the gRPC transport tests: frames written and
read by hand (preface, SETTINGS, PING, GOAWAY), no HPACK and no streams, to
see what grpc's server does with a connection (GOAWAY codes, closes)."""

from __future__ import annotations

import socket
import struct
import time

from conftest import HOST

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING, GOAWAY = 0x4, 0x6, 0x7
ACK = 0x1
ENHANCE_YOUR_CALM = 0xB


class RawHttp2:
    """A bare HTTP/2 connection: frames written and read by hand, no HPACK
    (no streams are opened)."""

    def __init__(self, server, answer_pings: bool = True) -> None:
        self.sock = socket.create_connection((HOST, server.grpc_port), timeout=10)
        self.answer_pings = answer_pings
        self._buffer = b""
        self.sock.sendall(PREFACE + self._frame(SETTINGS, 0, b""))

    @staticmethod
    def _frame(kind: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
            struct.pack(">I", 0) + payload

    def ping(self, data: bytes = b"pyserver") -> None:
        self.sock.sendall(self._frame(PING, 0, data))

    def frames(self, seconds: float):
        """Frames received within ``seconds`` as (type, flags, payload),
        settings and (if answer_pings) pings answered on the way; ends early
        when the server closes."""
        deadline = time.monotonic() + seconds
        while True:
            while len(self._buffer) >= 9:
                length = int.from_bytes(self._buffer[:3], "big")
                if len(self._buffer) < 9 + length:
                    break
                kind, flags = self._buffer[3], self._buffer[4]
                payload = self._buffer[9:9 + length]
                self._buffer = self._buffer[9 + length:]
                if kind == SETTINGS and not flags & ACK:
                    self.sock.sendall(self._frame(SETTINGS, ACK, b""))
                if kind == PING and not flags & ACK and self.answer_pings:
                    self.sock.sendall(self._frame(PING, ACK, payload))
                yield kind, flags, payload
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return
            except ConnectionResetError:
                data = b""
            if not data:
                yield None, 0, b""  # closed
                return
            self._buffer += data

    def close(self) -> None:
        self.sock.close()


def goaway_of(payload: bytes) -> tuple[int, bytes]:
    """A GOAWAY frame's error code and debug data."""
    return struct.unpack(">I", payload[4:8])[0], payload[8:]
