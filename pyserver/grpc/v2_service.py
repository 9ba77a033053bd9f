"""The v2 gRPC API: ``inference.GRPCInferenceService`` (KServe / Open
Inference Protocol with Triton's extensions), on the same grpc.aio server as
v1's GRPCService.

Errors are gRPC statuses as Triton gives them (INVALID_ARGUMENT, NOT_FOUND,
UNAVAILABLE, ...; errors.grpc_status). Inference goes through the same
server API as every other front end: protocol.v2 translates a
ModelInferRequest into an InferenceRequest for ``infer``. Messages arrive
as bytes and are parsed here, so that one that does not parse is an
INVALID_ARGUMENT (on a stream: an error_message for that message only).
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import grpc
from google.protobuf import json_format

from pyserver.api.response import InferenceResponse
from pyserver.errors import Code, ServerError, grpc_status, internal, invalid_arg
from pyserver.protocol import v2
from pyserver.protocol.messages import parse
from pyserver.protos import v2_grpc_service_pb2 as pb
from pyserver.server import InferenceServer
from pyserver.shared_memory import CudaRegion, SystemRegion

log = logging.getLogger("pyserver.grpc")

SERVICE_NAME = "inference.GRPCInferenceService"
# Requests of one ModelStreamInfer stream that may be in flight at once.
STREAM_WINDOW = 64


def _serialize(message) -> bytes:
    return message.SerializeToString()


class V2GrpcService:
    """Handlers of GRPCInferenceService. Runs on the event loop."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        def unary(method, request_type):
            async def call(data: bytes, context):
                try:
                    return await method(parse(request_type, data))
                except ServerError as exc:
                    error = exc
                except Exception:  # a fault of ours: the client learns only that
                    log.exception("gRPC %s failed", request_type.DESCRIPTOR.name)
                    error = internal("internal error")
                await context.abort(grpc_status(error.code), error.message)
            return grpc.unary_unary_rpc_method_handler(call, response_serializer=_serialize)

        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": unary(self.model_infer, pb.ModelInferRequest),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                self.model_stream_infer, response_serializer=_serialize),
            "ModelConfig": unary(self.model_config, pb.ModelConfigRequest),
            "ModelStatistics": unary(self.model_statistics, pb.ModelStatisticsRequest),
            "RepositoryIndex": unary(self.repository_index, pb.RepositoryIndexRequest),
            "RepositoryModelLoad": unary(self.repository_load, pb.RepositoryModelLoadRequest),
            "RepositoryModelUnload": unary(self.repository_unload,
                                           pb.RepositoryModelUnloadRequest),
            "SystemSharedMemoryStatus": unary(self.system_shm_status,
                                              pb.SystemSharedMemoryStatusRequest),
            "SystemSharedMemoryRegister": unary(self.system_shm_register,
                                                pb.SystemSharedMemoryRegisterRequest),
            "SystemSharedMemoryUnregister": unary(self.system_shm_unregister,
                                                  pb.SystemSharedMemoryUnregisterRequest),
            "CudaSharedMemoryStatus": unary(self.cuda_shm_status,
                                            pb.CudaSharedMemoryStatusRequest),
            "CudaSharedMemoryRegister": unary(self.cuda_shm_register,
                                              pb.CudaSharedMemoryRegisterRequest),
            "CudaSharedMemoryUnregister": unary(self.cuda_shm_unregister,
                                                pb.CudaSharedMemoryUnregisterRequest),
            "LogSettings": unary(self.log_settings, pb.LogSettingsRequest),
            "TraceSetting": unary(self.trace_setting, pb.TraceSettingRequest),
        })

    # -- health and metadata ---------------------------------------------------------

    async def server_live(self, request):
        return pb.ServerLiveResponse(live=self.server.live)

    async def server_ready(self, request):
        return pb.ServerReadyResponse(ready=self.server.ready)

    async def model_ready(self, request):
        return pb.ModelReadyResponse(ready=self.server.model_ready(
            request.name, v2.parse_version(request.version)))

    async def server_metadata(self, request):
        return json_format.ParseDict(v2.server_metadata(self.server), pb.ServerMetadataResponse())

    async def model_metadata(self, request):
        doc = v2.model_metadata(self.server.model_metadata(request.name,
                                                           v2.parse_version(request.version)))
        return json_format.ParseDict(doc, pb.ModelMetadataResponse())

    async def model_config(self, request):
        config = self.server.model_config(request.name, v2.parse_version(request.version))
        return pb.ModelConfigResponse(config=v2.v2_config(config))

    async def model_statistics(self, request):
        doc = v2.statistics(self.server.statistics(
            request.name, v2.parse_version(request.version) if request.version else 0))
        return json_format.ParseDict(doc, pb.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # -- repository ---------------------------------------------------------------

    async def repository_index(self, request):
        models = v2.repository_index(self.server.index(request.ready))
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

    # -- shared memory ----------------------------------------------------------------

    async def system_shm_status(self, request):
        out = pb.SystemSharedMemoryStatusResponse()
        for region in self.server.shared_memory.status(SystemRegion, request.name):
            out.regions[region["name"]].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(**region))
        return out

    async def system_shm_register(self, request):
        self.server.shared_memory.register_system(request.name, request.key, request.offset,
                                                  request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def system_shm_unregister(self, request):
        self.server.shared_memory.unregister(SystemRegion, request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def cuda_shm_status(self, request):
        out = pb.CudaSharedMemoryStatusResponse()
        for region in self.server.shared_memory.status(CudaRegion, request.name):
            out.regions[region["name"]].CopyFrom(
                pb.CudaSharedMemoryStatusResponse.RegionStatus(**region))
        return out

    async def cuda_shm_register(self, request):
        self.server.shared_memory.register_cuda(request.name, request.raw_handle,
                                                request.device_id, request.byte_size)
        return pb.CudaSharedMemoryRegisterResponse()

    async def cuda_shm_unregister(self, request):
        self.server.shared_memory.unregister(CudaRegion, request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- log settings -------------------------------------------------------------------

    async def log_settings(self, request):
        server = self.server
        settings = server.update_log_settings(
            {name: _setting_value(value) for name, value in request.settings.items()}) \
            if request.settings else server.log_settings()
        response = pb.LogSettingsResponse()
        for name, value in settings.items():
            slot = response.settings[name]
            if isinstance(value, bool):
                slot.bool_param = value
            elif isinstance(value, int):
                slot.uint32_param = value
            else:
                slot.string_param = value
        return response

    async def trace_setting(self, request):
        server = self.server
        model = request.model_name
        if request.settings:
            changes = {}
            for name, value in request.settings.items():
                values = list(value.value)
                # trace_level is a list; the others one string; no value drops it
                changes[name] = None if not values else (
                    values if name == "trace_level" else values[0])
            settings = server.update_trace_settings(changes, model)
        else:
            settings = server.trace_settings(model)
        response = pb.TraceSettingResponse()
        for name, value in settings.items():
            response.settings[name].value.extend(value if isinstance(value, list) else [value])
        return response

    # -- inference ----------------------------------------------------------------------

    async def model_infer(self, message) -> pb.ModelInferResponse:
        response = await self._infer(message)
        if response.error is not None:
            raise response.error
        return _infer_response(response, message.id)

    async def _infer(self, message) -> InferenceResponse:
        """Runs one ModelInferRequest to its InferenceResponse (failures
        included). Cancelling the awaiting task (the call cancelled, its
        deadline passed, its stream gone) cancels the request if it is still
        queued."""
        try:
            request = v2.request_from_grpc(message).request
        except ServerError as exc:
            return InferenceResponse.failure(message.model_name, 0, message.id, exc)
        return await self.server.infer_async(request)

    async def model_stream_infer(self, requests: AsyncIterator[bytes], context):
        """Answers the requests of a stream in request order; an error
        (a message that does not parse included) is an error_message on
        the stream, which stays open. Up to STREAM_WINDOW requests run at
        once (so a stream can fill the dynamic batcher); beyond that the
        stream stops reading."""
        pending: asyncio.Queue = asyncio.Queue(STREAM_WINDOW)

        async def read() -> None:
            try:
                async for data in requests:
                    await pending.put(self._start_stream_message(data))
            finally:
                await pending.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                started = await pending.get()
                if started is None:
                    break
                message_id, answer = started
                response = await answer
                if response.error is not None:
                    yield pb.ModelStreamInferResponse(error_message=response.error.message)
                else:
                    yield pb.ModelStreamInferResponse(
                        infer_response=_infer_response(response, message_id))
            await reader  # re-raises a failed read
        finally:
            if not reader.done():
                reader.cancel()
            while not pending.empty():
                started = pending.get_nowait()
                if started is not None:
                    started[1].cancel()

    def _start_stream_message(self, data: bytes) -> tuple[str, asyncio.Future]:
        """(message id, future of its response), the request handed to the server (no
        task per message: the server's completion resolves the future). Cancelling the
        future cancels the request if it is still queued."""
        answer = asyncio.get_running_loop().create_future()
        try:
            message = parse(pb.ModelInferRequest, data)
        except ServerError as exc:
            answer.set_result(InferenceResponse.failure("", 0, "", exc))
            return "", answer
        try:
            request = v2.request_from_grpc(message).request
        except ServerError as exc:
            answer.set_result(InferenceResponse.failure(message.model_name, 0, message.id, exc))
            return message.id, answer

        def done(response: InferenceResponse) -> None:
            if not answer.done():
                answer.set_result(response)

        handle = self.server.infer(request, done)
        if not answer.done():
            answer.add_done_callback(lambda f: handle.cancel() if f.cancelled() else None)
        return message.id, answer


def _setting_value(value):
    choice = value.WhichOneof("parameter_choice")
    if choice is None:
        raise invalid_arg("a log setting was sent without a value")
    return getattr(value, choice)


def _infer_response(response: InferenceResponse, message_id: str) -> pb.ModelInferResponse:
    out = pb.ModelInferResponse(model_name=response.model, model_version=str(response.version),
                                id=message_id)
    raw = out.raw_output_contents
    # raw_output_contents follows the outputs' order: an output written into
    # shared memory has an empty entry, unless no raw output comes after it.
    trailing = 0
    for output in response.outputs:
        tensor = out.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if output.shared_memory is None:
            raw.append(output.to_bytes())
            trailing = 0
            continue
        for key, value in v2.shared_memory_parameters(output.shared_memory).items():
            if isinstance(value, str):
                tensor.parameters[key].string_param = value
            else:
                tensor.parameters[key].int64_param = value
        raw.append(b"")
        trailing += 1
    if trailing:
        del raw[-trailing:]
    return out
