"""The v1 gRPC API: ``nvidia.inferenceserver.GRPCService`` (facts §3).

Every RPC finishes with gRPC status OK and carries its outcome in the
response's ``request_status``, as v1 did; only grpc itself answers non-OK
(an oversized message, a call on a stopping server). Handlers take and
return serialized messages, so that a malformed request is answered with a
v1 INVALID_ARG and the response of Infer can be written straight to wire
bytes (protocol.v1_grpc). Inference goes through the same server API as
HTTP: the server API's ``infer``; so does model control (``load_model`` /
``unload_model``, explicit mode only).
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import grpc

from pyserver.errors import Code, ServerError, internal, invalid_arg
from pyserver.protocol import v1_grpc, v1_infer, v1_shared_memory, v1_status
from pyserver.protos import grpc_service_pb2 as gs
from pyserver.server import InferenceServer

log = logging.getLogger("pyserver.grpc")

SERVICE_NAME = "nvidia.inferenceserver.GRPCService"
# Requests of one stream that may be in flight at once; the stream stops
# reading (and HTTP/2 flow control pushes back on the client) beyond it.
STREAM_WINDOW = 64


class V1GrpcService:
    """Handlers of GRPCService. Runs on the event loop."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self.status = v1_grpc.StatusEncoder(server.id)
        self._templates = v1_infer.TemplateCache()

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The handler to register with a grpc.aio server: bytes in, bytes out."""
        def unary(method):
            async def call(data: bytes, context):
                try:
                    return await method(data, context)
                except Exception:  # a fault of ours: the client learns only that
                    log.exception("gRPC %s failed", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            return grpc.unary_unary_rpc_method_handler(call)

        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Health": unary(self.health),
            "Status": unary(self.status_rpc),
            "Infer": unary(self.infer),
            "StreamInfer": grpc.stream_stream_rpc_method_handler(self.stream_infer),
            "ModelControl": unary(self.model_control),
            "SharedMemoryControl": unary(self.shared_memory_control),
            "Repository": unary(self.repository),
        })

    # -- health, status, repository ------------------------------------------

    async def health(self, data: bytes, context) -> bytes:
        server = self.server
        try:
            mode = v1_grpc.parse(gs.HealthRequest, data).mode
            if mode == "live":
                healthy = server.v1_live
            elif mode == "ready":
                healthy = server.v1_ready
            else:
                raise ServerError(Code.UNKNOWN, f"unknown health mode '{mode}'")
        except ServerError as exc:
            return gs.HealthResponse(request_status=self._status(exc)).SerializeToString()
        status = self._status()
        if not healthy and server.draining:
            status = self._status(ServerError(Code.UNAVAILABLE, "Server exiting"))
        return gs.HealthResponse(request_status=status, health=healthy).SerializeToString()

    async def status_rpc(self, data: bytes, context) -> bytes:
        try:
            request = v1_grpc.parse(gs.StatusRequest, data)
            status = v1_status.server_status(self.server, request.model_name)
        except ServerError as exc:
            return gs.StatusResponse(request_status=self._status(exc)).SerializeToString()
        return gs.StatusResponse(request_status=self._status(),
                                 server_status=status).SerializeToString()

    async def repository(self, data: bytes, context) -> bytes:
        try:
            request = v1_grpc.parse(gs.RepositoryRequest, data)
            if request.WhichOneof("request_type") != "index":
                raise ServerError(Code.UNKNOWN, "request type is not specified")
        except ServerError as exc:
            return gs.RepositoryResponse(request_status=self._status(exc)).SerializeToString()
        return gs.RepositoryResponse(request_status=self._status(),
                                     index=v1_status.repository_index(self.server)
                                     ).SerializeToString()

    async def model_control(self, data: bytes, context) -> bytes:
        """LOAD (or reload) / UNLOAD one model; explicit model control mode
        only, as over HTTP (the server answers UNAVAILABLE otherwise)."""
        try:
            request = v1_grpc.parse(gs.ModelControlRequest, data)
            name = request.model_name
            if not name or "/" in name or name in (".", ".."):
                raise invalid_arg(f"'{name}' is not a model name")
            if request.type == gs.ModelControlRequest.LOAD:
                await self.server.load_model(name)
            elif request.type == gs.ModelControlRequest.UNLOAD:
                await self.server.unload_model(name)
            else:
                raise invalid_arg(f"unknown model control type {request.type}")
        except ServerError as exc:
            return gs.ModelControlResponse(request_status=self._status(exc)).SerializeToString()
        return gs.ModelControlResponse(request_status=self._status()).SerializeToString()

    async def shared_memory_control(self, data: bytes, context) -> bytes:
        """Register (system or CUDA), unregister, unregister_all or status
        of shared-memory regions (facts §3.2)."""
        try:
            request = v1_grpc.parse(gs.SharedMemoryControlRequest, data)
            status = v1_shared_memory.grpc_control(self.server.shared_memory, request)
        except ServerError as exc:
            return gs.SharedMemoryControlResponse(
                request_status=self._status(exc)).SerializeToString()
        response = gs.SharedMemoryControlResponse(request_status=self._status())
        if status is not None:
            response.shared_memory_status.shared_memory_region.extend(
                status.shared_memory_region)
        return response.SerializeToString()

    # -- inference ---------------------------------------------------------------

    async def infer(self, data: bytes, context) -> bytes:
        return await self.answer(data)

    async def stream_infer(self, requests: AsyncIterator[bytes], context) -> AsyncIterator[bytes]:
        """One response per request, in the order the requests were read.
        Requests run concurrently (up to STREAM_WINDOW); a cancelled stream
        cancels its requests still queued and leaves other streams alone."""
        pending: asyncio.Queue = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)

        async def read() -> None:
            try:
                async for data in requests:
                    await window.acquire()
                    pending.put_nowait(self.start_infer(data))
            finally:
                pending.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                answer = await pending.get()
                if answer is None:
                    break
                response = await answer
                window.release()
                yield response
            await reader
        finally:
            reader.cancel()
            while not pending.empty():
                answer = pending.get_nowait()
                if answer is not None:
                    answer.cancel()

    def start_infer(self, data: bytes) -> asyncio.Future:
        """Starts one InferRequest; the future's result is the serialized
        InferResponse (failures included). Cancelling the future cancels the
        request if it is still queued."""
        return asyncio.ensure_future(self.answer(data))

    async def answer(self, data: bytes) -> bytes:
        """The serialized InferResponse of one InferRequest (failures
        included). Cancelling the awaiting task (the call cancelled, its
        deadline passed, its stream gone) cancels the request if it is still
        queued."""
        request_id = 0
        try:
            request = v1_grpc.parse(gs.InferRequest, data)
            header = request.meta_data
            request_id = header.id
            template = self._templates.from_header(header)
            inference = template.request(request.model_name, request.model_version, request_id,
                                         request.raw_input)
        except ServerError as exc:
            return self._infer_error(exc, request_id)
        except Exception:  # a bug of ours: answer INTERNAL, keep serving
            log.exception("gRPC infer failed")
            return self._infer_error(internal("internal error"), request_id)
        response = await self.server.infer_async(inference)
        if response.error is not None:
            return self._infer_error(response.error, request_id)
        result = v1_infer.encode_response(response, request_id)
        status = self.status.success(self.server.next_request_id())
        return v1_grpc.infer_response(status, result.binary, result.raw)

    def _infer_error(self, exc: ServerError, request_id: int) -> bytes:
        status = self.status.error(exc, self.server.next_request_id())
        return v1_grpc.infer_error_response(status, request_id)

    def _status(self, exc: ServerError | None = None):
        number = self.server.next_request_id()
        if exc is None:
            return self.status.message(Code.SUCCESS, "", number)
        return self.status.message(exc.code, exc.message, number)
