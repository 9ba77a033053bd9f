"""The v2 gRPC API: ``inference.GRPCInferenceService`` (KServe / Open
Inference Protocol with Triton's extensions), on the same grpc.aio server as
v1's GRPCService.

Errors are gRPC statuses as Triton gives them (INVALID_ARGUMENT, NOT_FOUND,
UNAVAILABLE, ...). Inference goes through the same path as every other
front end: protocol.v2 builds v1's plan and payload, then ``submit``.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import grpc
from google.protobuf import json_format

from pyserver import _core
from pyserver.errors import Code, ServerError, invalid_arg
from pyserver.protocol import v2
from pyserver.protos import v2_grpc_service_pb2 as pb
from pyserver.protos import v2_model_config_pb2 as mc2
from pyserver.repository.manager import LATEST
from pyserver.server import InferenceServer

SERVICE_NAME = "inference.GRPCInferenceService"
# Requests of one ModelStreamInfer stream that may be in flight at once.
STREAM_WINDOW = 64

GRPC_CODES = {
    Code.UNKNOWN: grpc.StatusCode.UNKNOWN,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.INVALID_ARG: grpc.StatusCode.INVALID_ARGUMENT,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    Code.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
}


def _version(text: str) -> int:
    if not text:
        return LATEST
    if not text.isdigit():
        raise invalid_arg(f"model version must be a number, got '{text}'")
    return int(text)


class V2GrpcService:
    """Handlers of GRPCInferenceService. Runs on the event loop."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        def unary(method, request_type):
            async def call(request, context):
                try:
                    return await method(request)
                except ServerError as exc:
                    await context.abort(GRPC_CODES.get(exc.code, grpc.StatusCode.UNKNOWN),
                                        exc.message)
            return grpc.unary_unary_rpc_method_handler(
                call, request_deserializer=request_type.FromString,
                response_serializer=lambda m: m.SerializeToString())

        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": unary(self.model_infer, pb.ModelInferRequest),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                self.model_stream_infer, request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=lambda m: m.SerializeToString()),
            "ModelConfig": unary(self.model_config, pb.ModelConfigRequest),
            "ModelStatistics": unary(self.model_statistics, pb.ModelStatisticsRequest),
            "RepositoryIndex": unary(self.repository_index, pb.RepositoryIndexRequest),
            "RepositoryModelLoad": unary(self.repository_load, pb.RepositoryModelLoadRequest),
            "RepositoryModelUnload": unary(self.repository_unload,
                                           pb.RepositoryModelUnloadRequest),
        })

    # -- health and metadata ---------------------------------------------------------

    async def server_live(self, request):
        return pb.ServerLiveResponse(live=self.server.live)

    async def server_ready(self, request):
        return pb.ServerReadyResponse(ready=self.server.ready)

    async def model_ready(self, request):
        try:
            self.server.resolve(request.name, _version(request.version))
            return pb.ModelReadyResponse(ready=True)
        except ServerError:
            return pb.ModelReadyResponse(ready=False)

    async def server_metadata(self, request):
        return json_format.ParseDict(v2.server_metadata(self.server), pb.ServerMetadataResponse())

    async def model_metadata(self, request):
        doc = v2.model_metadata(self.server, request.name, _version(request.version))
        return json_format.ParseDict(doc, pb.ModelMetadataResponse())

    async def model_config(self, request):
        config = self.server.repository.resolve(request.name, _version(request.version)).config
        # same field numbers: the v1 config is the v2 config's wire form
        return pb.ModelConfigResponse(config=mc2.ModelConfig.FromString(
            config.SerializeToString()))

    async def model_statistics(self, request):
        doc = v2.statistics(self.server, request.name, _version(request.version)
                            if request.version else 0)
        return json_format.ParseDict(doc, pb.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # -- repository ---------------------------------------------------------------

    async def repository_index(self, request):
        models = v2.repository_index(self.server, request.ready)
        return json_format.ParseDict({"models": models}, pb.RepositoryIndexResponse())

    async def repository_load(self, request):
        if any(k == "config" or k.startswith("file:") for k in request.parameters):
            raise ServerError(Code.UNSUPPORTED, "load with a config or file override is not "
                                                "supported")
        await self._control(self.server.load_model, request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(self, request):
        await self._control(self.server.unload_model, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def _control(self, action, name: str) -> None:
        try:
            await action(name)
        except ServerError as exc:
            # Triton answers a failed load / unload with INVALID_ARGUMENT.
            if exc.code != Code.UNAVAILABLE:
                raise ServerError(Code.INVALID_ARG, exc.message) from None
            raise

    # -- inference ----------------------------------------------------------------------

    async def model_infer(self, request):
        return await self._infer(request)

    async def _infer(self, message) -> pb.ModelInferResponse:
        received = _core.monotonic_ns()
        server = self.server
        version = None
        plan = None
        try:
            version = server.resolve(message.model_name, _version(message.model_version))
            request = v2.request_from_grpc(message)
            plan = v2.plan_for(version, request)
            payload = v2.payload(plan, request)
        except ServerError:
            if version is not None:
                server.record_rejected(version, plan.batch_size if plan else 1, received)
            raise
        result, _ = await server.infer(version, plan.batch_size, payload, received)
        doc, parts = v2.build_response(plan, request, result)
        response = pb.ModelInferResponse(model_name=doc["model_name"],
                                         model_version=doc["model_version"],
                                         id=message.id, raw_output_contents=parts)
        for out in doc["outputs"]:
            response.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
        return response

    async def model_stream_infer(self, requests: AsyncIterator, context):
        """Answers the requests of a stream in request order; an error is an
        error_message on the stream, which stays open. Up to STREAM_WINDOW
        requests run at once (so a stream can fill the dynamic batcher);
        beyond that the stream stops reading."""
        pending: asyncio.Queue = asyncio.Queue(STREAM_WINDOW)

        async def read() -> None:
            try:
                async for message in requests:
                    await pending.put(asyncio.ensure_future(self._infer(message)))
            finally:
                await pending.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                task = await pending.get()
                if task is None:
                    break
                try:
                    response = await task
                except ServerError as exc:
                    yield pb.ModelStreamInferResponse(error_message=exc.message)
                else:
                    yield pb.ModelStreamInferResponse(infer_response=response)
            await reader  # re-raises a failed read
        finally:
            if not reader.done():
                reader.cancel()
            while not pending.empty():
                task = pending.get_nowait()
                if task is not None:
                    task.cancel()
