"""v1 gRPC translation: InferRequest messages into InferenceRequests (through
v1_infer's templates, keyed by the serialized header without its id),
responses into InferResponse wire bytes (facts §3).

No sockets here. InferResponse is written straight to wire bytes: the
response header comes serialized from ``v1_infer.encode_response`` (cached
per output shape), so it is never parsed back into a message on the hot
path.
"""

from __future__ import annotations

from pyserver.errors import Code, ServerError, v1_code
from pyserver.protocol.messages import parse  # noqa: F401 (the v1 service parses with it)
from pyserver.protocol.v1_infer import _varint
from pyserver.protos import api_pb2
from pyserver.protos import request_status_pb2 as rs

# Field tags of InferResponse: request_status = 1, meta_data = 2,
# raw_output = 3, all length-delimited.
_STATUS_TAG = b"\x0a"
_META_TAG = b"\x12"
_RAW_TAG = b"\x1a"
# RequestStatus: code = 1 (varint), server_id = 3 (string), request_id = 4 (varint).
_SUCCESS_CODE = b"\x08\x01"
_SERVER_ID_TAG = b"\x1a"
_REQUEST_ID_TAG = b"\x20"


class StatusEncoder:
    """Serialized RequestStatus messages of one server. The success form is
    a cached prefix plus the request number."""

    def __init__(self, server_id: str) -> None:
        self.server_id = server_id
        encoded = server_id.encode()
        self._success_prefix = (_SUCCESS_CODE + _SERVER_ID_TAG + _varint(len(encoded)) + encoded
                                + _REQUEST_ID_TAG)

    def success(self, request_number: int) -> bytes:
        return self._success_prefix + _varint(request_number)

    def message(self, code: int, message: str, request_number: int) -> rs.RequestStatus:
        return rs.RequestStatus(code=v1_code(code), msg="" if code == Code.SUCCESS else message,
                                server_id=self.server_id, request_id=request_number)

    def error(self, exc: ServerError, request_number: int) -> bytes:
        return self.message(exc.code, exc.message, request_number).SerializeToString()


def infer_response(status: bytes, header: bytes, raw_outputs: list[bytes]) -> bytes:
    """A serialized InferResponse from a serialized RequestStatus, a
    serialized InferResponseHeader and one raw_output entry per header
    output (empty for classification outputs)."""
    parts = [_STATUS_TAG, _varint(len(status)), status, _META_TAG, _varint(len(header)), header]
    for data in raw_outputs:
        parts += (_RAW_TAG, _varint(len(data)), data)
    return b"".join(parts)


def infer_error_response(status: bytes, request_id: int) -> bytes:
    """A failed InferResponse: meta_data holds only the client's id and
    there is no raw_output (facts §3.1)."""
    header = api_pb2.InferResponseHeader(id=request_id).SerializeToString()
    return infer_response(status, header, [])
