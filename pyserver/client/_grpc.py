"""v1 gRPC transport: one channel, GRPCService stubs, errors from the
response's RequestStatus (the v1 server never fails the RPC itself)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc

from pyserver.client import errors
from pyserver.protos import api_pb2, grpc_service_pb2_grpc, server_status_pb2
from pyserver.protos import grpc_service_pb2 as gs

MAX_MESSAGE_BYTES = 2**31 - 1
CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]


def target(url: str) -> str:
    """``host[:port]`` (default port 8001); INVALID_ARG for anything else."""
    from pyserver.client._http import split_url
    text = url[len("grpc://"):] if url.startswith("grpc://") else url
    host, port = split_url(text, default_port=8001)
    return f"{host}:{port}"


def rpc_error(exc: grpc.RpcError, where: str) -> errors.InferenceServerException:
    """An RpcError (connection, deadline, cancellation) as the one exception type."""
    code = exc.code() if hasattr(exc, "code") else None
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.unavailable(f"request to {where} timed out")
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.unavailable(f"cannot reach server at {where}: {detail}")
    return errors.internal(f"gRPC {code.name if code else 'error'} from {where}: {detail}")


def infer_request(model: str, version: int | None, header: api_pb2.InferRequestHeader,
                  buffers: list[bytes]) -> gs.InferRequest:
    return gs.InferRequest(model_name=model,
                           model_version=-1 if version is None else int(version),
                           meta_data=header, raw_input=buffers)


def unpack(response: gs.InferResponse) -> tuple[api_pb2.InferResponseHeader, dict[str, bytes]]:
    errors.check(response.request_status)
    header = response.meta_data
    return header, {o.name: bytes(d) for o, d in zip(header.output, response.raw_output)}


class GrpcTransport:
    """Blocking v1 gRPC calls over one channel."""

    def __init__(self, url: str, timeout: float | None) -> None:
        self.target = target(url)
        self.timeout = timeout
        self.channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self.stub = grpc_service_pb2_grpc.GRPCServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise rpc_error(exc, self.target) from None

    def health(self, mode: str) -> bool:
        response = self._call(self.stub.Health, gs.HealthRequest(mode=mode))
        errors.check(response.request_status)
        return response.health

    def status(self, model: str | None) -> server_status_pb2.ServerStatus:
        response = self._call(self.stub.Status, gs.StatusRequest(model_name=model or ""))
        errors.check(response.request_status)
        return response.server_status

    def infer(self, model: str, version: int | None, header: api_pb2.InferRequestHeader,
              buffers: list[bytes]):
        return unpack(self._call(self.stub.Infer, infer_request(model, version, header, buffers)))

    def stream(self, requests: Iterable[gs.InferRequest]) -> Iterator[gs.InferResponse]:
        """Responses in request order (the server answers a stream in order)."""
        try:
            yield from self.stub.StreamInfer(iter(requests), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise rpc_error(exc, self.target) from None
