"""Status codes and the one exception type that carries them to the wire.

Codes are the v1 ``RequestStatusCode`` values; every transport maps them
through the tables here and nowhere else.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """v1 RequestStatusCode, and FORBIDDEN and CANCELLED (not on the v1
    wire: v1_code)."""

    SUCCESS = 1
    UNKNOWN = 2
    INTERNAL = 3
    NOT_FOUND = 4
    INVALID_ARG = 5
    UNAVAILABLE = 6
    UNSUPPORTED = 7
    ALREADY_EXISTS = 8
    # The client gave the request up (connection lost, call cancelled) while
    # it was queued; it never ran. The core's StatusCode::kCancelled.
    CANCELLED = 9
    # A feature the server's operator has not allowed (shared memory without
    # --allow-shared-memory): HTTP 403, and UNAVAILABLE on gRPC and v1, as
    # Triton answers its restricted APIs.
    FORBIDDEN = 100


class ServerError(Exception):
    """A failed request: a v1 status code and a message for the client."""

    def __init__(self, code: Code | int, message: str) -> None:
        super().__init__(message)
        self.code = Code(code)
        self.message = message

    def __repr__(self) -> str:
        return f"ServerError({self.code.name}, {self.message!r})"


def invalid_arg(message: str) -> ServerError:
    return ServerError(Code.INVALID_ARG, message)


def not_found(message: str) -> ServerError:
    return ServerError(Code.NOT_FOUND, message)


def unavailable(message: str) -> ServerError:
    return ServerError(Code.UNAVAILABLE, message)


def internal(message: str) -> ServerError:
    return ServerError(Code.INTERNAL, message)


# -- the one table from codes to transport statuses ---------------------------

def v1_code(code: Code) -> Code:
    """The v1 RequestStatusCode that carries ``code``."""
    return Code.UNAVAILABLE if code in (Code.FORBIDDEN, Code.CANCELLED) else code


# v1 HTTP answers 200 only on SUCCESS and 400 for every other code
# (as the v1 server did).
def v1_http_status(code: Code) -> int:
    return 200 if code == Code.SUCCESS else 400


# v2 HTTP: Triton's mapping of error codes to HTTP statuses (http_server.cc).
_V2_HTTP = {Code.SUCCESS: 200, Code.INTERNAL: 500, Code.NOT_FOUND: 404, Code.UNAVAILABLE: 503,
            Code.UNSUPPORTED: 501, Code.FORBIDDEN: 403}


def v2_http_status(code: Code) -> int:
    return _V2_HTTP.get(code, 400)


# v2 gRPC: the status code of a failed RPC (names of grpc.StatusCode).
# v1 gRPC answers every RPC with gRPC status OK and carries the code in the
# response's request_status (facts §3), so it needs no table.
_V2_GRPC = {Code.SUCCESS: "OK", Code.UNKNOWN: "UNKNOWN", Code.INTERNAL: "INTERNAL",
            Code.NOT_FOUND: "NOT_FOUND", Code.INVALID_ARG: "INVALID_ARGUMENT",
            Code.UNAVAILABLE: "UNAVAILABLE", Code.UNSUPPORTED: "UNIMPLEMENTED",
            Code.ALREADY_EXISTS: "ALREADY_EXISTS", Code.FORBIDDEN: "UNAVAILABLE",
            Code.CANCELLED: "CANCELLED"}


def grpc_status(code: Code):
    """The grpc.StatusCode of ``code``."""
    import grpc  # not needed by the in-process API
    return grpc.StatusCode[_V2_GRPC.get(code, "UNKNOWN")]
