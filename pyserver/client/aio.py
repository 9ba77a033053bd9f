"""Asyncio variant of :class:`pyserver.client.InferenceServerClient`.

HTTP runs on asyncio streams (one keep-alive connection, calls serialized
by a lock); gRPC on one ``grpc.aio`` channel. Same arguments, results and
exceptions as the blocking client; every method is a coroutine except
:meth:`InferenceServerClient.stream_infer`, an async iterator.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

from pyserver.client import errors
from pyserver.client._grpc import CHANNEL_OPTIONS, infer_request, rpc_error, target, unpack
from pyserver.client._http import (parse_status_header, split_infer_body, split_url, infer_path,
                                   status_path)
from pyserver.client._infer import InferResult, Inputs, Outputs, model_config, prepare, result
from pyserver.client.client import DEFAULT_TIMEOUT_S, _protocol
from pyserver.protos import (grpc_service_pb2 as gs, grpc_service_pb2_grpc, model_config_pb2 as mc,
                             request_status_pb2, server_status_pb2)
from google.protobuf import text_format
from google.protobuf.message import DecodeError


class _AioHttp:
    def __init__(self, url: str, timeout: float | None) -> None:
        self.host, self.port = split_url(url)
        self.timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def _exchange(self, method: str, path: str, headers: dict, body: bytes):
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        hdrs: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            hdrs[key.strip().lower()] = value.strip()
        data = await reader.readexactly(int(hdrs.get("content-length", "0")))
        if hdrs.get("connection", "").lower() == "close":
            await self.close()
        return status, hdrs, data

    async def call(self, method: str, path: str, headers: dict | None = None, body: bytes = b""):
        async with self._lock:
            for attempt in (0, 1):
                fresh = self._streams is None
                try:
                    status, hdrs, data = await asyncio.wait_for(
                        self._exchange(method, path, headers or {}, body), self.timeout)
                    request_status = parse_status_header(hdrs.get("nv-status"), status, data)
                    return request_status, hdrs, data, status
                except asyncio.TimeoutError:
                    await self.close()
                    raise errors.unavailable(f"request to {self.host}:{self.port} timed out "
                                             f"after {self.timeout} s") from None
                except (ConnectionResetError, BrokenPipeError,
                        asyncio.IncompleteReadError) as exc:
                    await self.close()
                    if fresh or attempt:
                        raise errors.unavailable(
                            f"connection to {self.host}:{self.port} lost: {exc}") from None
                except (OSError, ValueError, IndexError) as exc:
                    await self.close()
                    raise errors.unavailable(
                        f"cannot reach server at {self.host}:{self.port}: {exc}") from None
        raise AssertionError("unreachable")

    async def health(self, mode: str) -> bool:
        status, _, _, http_status = await self.call("GET", f"/api/health/{mode}")
        errors.check(status)
        return http_status == 200

    async def status(self, model: str | None) -> server_status_pb2.ServerStatus:
        status, _, body, _ = await self.call("GET", status_path(model))
        errors.check(status)
        try:
            return server_status_pb2.ServerStatus.FromString(body)
        except DecodeError as exc:
            raise errors.internal(f"unparsable ServerStatus: {exc}") from None

    async def infer(self, model, version, header, buffers):
        text = text_format.MessageToString(header, as_one_line=True)
        status, hdrs, body, _ = await self.call(
            "POST", infer_path(model, version),
            {"NV-InferRequest": text, "Content-Type": "application/octet-stream"},
            b"".join(buffers))
        errors.check(status)
        return split_infer_body(body, hdrs.get("nv-inferresponse"))


class _AioGrpc:
    def __init__(self, url: str, timeout: float | None) -> None:
        self.target = target(url)
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self.stub = grpc_service_pb2_grpc.GRPCServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method, request):
        try:
            return await method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise rpc_error(exc, self.target) from None

    async def health(self, mode: str) -> bool:
        response = await self._call(self.stub.Health, gs.HealthRequest(mode=mode))
        errors.check(response.request_status)
        return response.health

    async def status(self, model: str | None) -> server_status_pb2.ServerStatus:
        response = await self._call(self.stub.Status, gs.StatusRequest(model_name=model or ""))
        errors.check(response.request_status)
        return response.server_status

    async def infer(self, model, version, header, buffers):
        return unpack(await self._call(self.stub.Infer,
                                       infer_request(model, version, header, buffers)))


class InferenceServerClient:
    """Asyncio v1 client; see :class:`pyserver.client.InferenceServerClient`.
    Create and use it inside one running event loop."""

    def __init__(self, url: str = "localhost:8000", protocol: str = "http",
                 timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.protocol = _protocol(protocol)
        self._transport: Any = (_AioHttp(url, timeout) if self.protocol == "http"
                                else _AioGrpc(url, timeout))
        self._configs: dict[str, mc.ModelConfig] = {}
        self._ids = itertools.count(1)

    async def __aenter__(self) -> "InferenceServerClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    async def is_live(self) -> bool:
        return await self._transport.health("live")

    async def is_ready(self) -> bool:
        return await self._transport.health("ready")

    async def get_status(self, model: str | None = None) -> server_status_pb2.ServerStatus:
        status = await self._transport.status(model)
        for name, model_status in status.model_status.items():
            self._configs[name] = model_status.config
        return status

    async def get_model_config(self, model: str) -> mc.ModelConfig:
        if model not in self._configs:
            self._configs[model] = model_config(await self._transport.status(model), model)
        return self._configs[model]

    async def infer(self, model: str, inputs: Inputs, outputs: Outputs = None, *,
                    batch_size: int | None = None, version: int | None = None,
                    request_id: int | None = None) -> InferResult:
        prepared = prepare(await self.get_model_config(model), inputs, outputs, batch_size,
                           next(self._ids) if request_id is None else request_id)
        header, raw = await self._transport.infer(model, version, prepared.header,
                                                  prepared.buffers)
        return result(prepared.config, header, raw)

    async def stream_infer(self, model: str, requests: Iterable[Inputs], outputs: Outputs = None,
                           *, version: int | None = None) -> AsyncIterator[InferResult]:
        """gRPC only: results of ``requests`` on one StreamInfer stream, in order."""
        if self.protocol != "grpc":
            raise errors.InferenceServerException(
                request_status_pb2.UNSUPPORTED, "streaming is only available over gRPC")
        config = await self.get_model_config(model)
        messages = []
        for inputs in requests:
            prepared = prepare(config, inputs, outputs, None, next(self._ids))
            messages.append(infer_request(model, version, prepared.header, prepared.buffers))
        call = self._transport.stub.StreamInfer(iter(messages), timeout=self._transport.timeout)
        try:
            async for response in call:
                header, raw = unpack(response)
                yield result(config, header, raw)
        except grpc.RpcError as exc:
            raise rpc_error(exc, self._transport.target) from None
