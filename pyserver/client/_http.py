"""v1 HTTP transport: one keep-alive connection, reopened when the server
closes it. Thread-safe (calls are serialized on a lock)."""

from __future__ import annotations

import http.client
import socket
import threading
from urllib.parse import quote

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from pyserver.client import errors
from pyserver.protos import api_pb2, request_status_pb2, server_status_pb2


def split_url(url: str, default_port: int = 8000) -> tuple[str, int]:
    """``host[:port]`` (an ``http://`` prefix is allowed) as (host, port);
    InferenceServerException(INVALID_ARG) for anything else."""
    text = url.strip()
    if text.startswith("http://"):
        text = text[len("http://"):]
    text = text.rstrip("/")
    if not text or "/" in text or "://" in text:
        raise errors.invalid_arg(f"bad server URL '{url}': expected host:port")
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not host:
        raise errors.invalid_arg(f"bad server URL '{url}': expected host:port")
    return host.strip("[]"), int(port)


def parse_status_header(value: str | None, http_status: int, body: bytes
                        ) -> request_status_pb2.RequestStatus:
    """The NV-Status header; INTERNAL when missing or unparsable."""
    if value is None:
        text = body[:200].decode(errors="replace").strip()
        raise errors.internal(f"HTTP {http_status} without NV-Status"
                              + (f": {text}" if text else ""))
    try:
        return text_format.Parse(value, request_status_pb2.RequestStatus())
    except text_format.ParseError as exc:
        raise errors.internal(f"unparsable NV-Status '{value}': {exc}") from None


def infer_path(model: str, version: int | None) -> str:
    path = f"/api/infer/{quote(model, safe='')}"
    if version is not None and version >= 0:
        path += f"/{int(version)}"
    return path + "?format=binary"


def status_path(model: str | None) -> str:
    return "/api/status" + (f"/{quote(model, safe='')}" if model else "") + "?format=binary"


def split_infer_body(body: bytes, status_header: str | None
                     ) -> tuple[api_pb2.InferResponseHeader, dict[str, bytes]]:
    """(InferResponseHeader, raw bytes by name) from a binary infer body. Raw
    sizes come from the NV-InferResponse header; the trailer is the rest."""
    raw: dict[str, bytes] = {}
    offset = 0
    if status_header:
        try:
            meta = text_format.Parse(status_header, api_pb2.InferResponseHeader(),
                                     allow_unknown_field=True)
        except text_format.ParseError as exc:
            raise errors.internal(f"unparsable NV-InferResponse: {exc}") from None
        for output in meta.output:
            if output.HasField("raw"):
                size = output.raw.batch_byte_size
                raw[output.name] = body[offset:offset + size]
                offset += size
    try:
        header = api_pb2.InferResponseHeader.FromString(body[offset:])
    except DecodeError as exc:
        raise errors.internal(f"unparsable InferResponseHeader: {exc}") from None
    return header, raw


class HttpTransport:
    """Blocking v1 HTTP calls over one keep-alive connection."""

    def __init__(self, url: str, timeout: float | None) -> None:
        self.host, self.port = split_url(url)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def request(self, method: str, path: str, headers: dict | None = None,
                body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """(HTTP status, headers with lower-case names, body); one retry on a
        kept-alive connection the server had closed."""
        with self._lock:
            for attempt in (0, 1):
                fresh = self._conn is None
                if fresh:
                    self._conn = http.client.HTTPConnection(self.host, self.port,
                                                            timeout=self.timeout)
                try:
                    self._conn.request(method, path, body=body, headers=headers or {})
                    response = self._conn.getresponse()
                    data = response.read()
                    if response.getheader("connection", "").lower() == "close":
                        self._conn.close()
                        self._conn = None
                    return (response.status,
                            {k.lower(): v for k, v in response.getheaders()}, data)
                except (http.client.RemoteDisconnected, BrokenPipeError,
                        ConnectionResetError) as exc:
                    self._conn.close()
                    self._conn = None
                    if fresh or attempt:
                        raise errors.unavailable(
                            f"connection to {self.host}:{self.port} lost: {exc}") from None
                except socket.timeout:
                    self._conn.close()
                    self._conn = None
                    raise errors.unavailable(f"request to {self.host}:{self.port} timed out "
                                             f"after {self.timeout} s") from None
                except (OSError, http.client.HTTPException) as exc:
                    self._conn.close()
                    self._conn = None
                    raise errors.unavailable(
                        f"cannot reach server at {self.host}:{self.port}: {exc}") from None
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, headers: dict | None = None,
             body: bytes = b"") -> tuple[request_status_pb2.RequestStatus, dict, bytes, int]:
        status, hdrs, data = self.request(method, path, headers, body)
        return parse_status_header(hdrs.get("nv-status"), status, data), hdrs, data, status

    def health(self, mode: str) -> bool:
        status, _, _, http_status = self.call("GET", f"/api/health/{mode}")
        if status.code != request_status_pb2.SUCCESS:
            raise errors.InferenceServerException.from_status(status)
        return http_status == 200

    def status(self, model: str | None) -> server_status_pb2.ServerStatus:
        status, _, body, _ = self.call("GET", status_path(model))
        errors.check(status)
        try:
            return server_status_pb2.ServerStatus.FromString(body)
        except DecodeError as exc:
            raise errors.internal(f"unparsable ServerStatus: {exc}") from None

    def infer(self, model: str, version: int | None, header: api_pb2.InferRequestHeader,
              buffers: list[bytes]) -> tuple[api_pb2.InferResponseHeader, dict[str, bytes]]:
        text = text_format.MessageToString(header, as_one_line=True)
        status, hdrs, body, _ = self.call(
            "POST", infer_path(model, version),
            {"NV-InferRequest": text, "Content-Type": "application/octet-stream"},
            b"".join(buffers))
        errors.check(status)
        return split_infer_body(body, hdrs.get("nv-inferresponse"))
