"""The one exception type of :mod:`pyserver.client`."""

from __future__ import annotations

from pyserver.protos import request_status_pb2

_Code = request_status_pb2.RequestStatusCode


class InferenceServerException(Exception):
    """A failed call: the v1 status code (``code``, ``code_name``), the
    server's message, and the server-side request number when one came back.

    Connection failures (refused, timed out, bad URL) carry ``UNAVAILABLE``;
    answers that are not valid v1 (no NV-Status, unparsable bodies) carry
    ``INTERNAL``.
    """

    def __init__(self, code: int, message: str, server_id: str = "",
                 request_id: int = 0) -> None:
        self.code = int(code)
        self.message = message
        self.server_id = server_id
        self.request_id = request_id
        super().__init__(str(self))

    @property
    def code_name(self) -> str:
        try:
            return _Code.Name(self.code)
        except ValueError:
            return f"CODE_{self.code}"

    def __str__(self) -> str:
        return f"[{self.code_name}] {self.message}"

    @classmethod
    def from_status(cls, status: request_status_pb2.RequestStatus) -> "InferenceServerException":
        return cls(status.code, status.msg or _Code.Name(status.code), status.server_id,
                   status.request_id)


def unavailable(message: str) -> InferenceServerException:
    return InferenceServerException(_Code.UNAVAILABLE, message)


def internal(message: str) -> InferenceServerException:
    return InferenceServerException(_Code.INTERNAL, message)


def invalid_arg(message: str) -> InferenceServerException:
    return InferenceServerException(_Code.INVALID_ARG, message)


def check(status: request_status_pb2.RequestStatus) -> None:
    """Raise unless ``status`` is SUCCESS."""
    if status.code != _Code.SUCCESS:
        raise InferenceServerException.from_status(status)
