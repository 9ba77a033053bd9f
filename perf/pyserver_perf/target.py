"""The server under load: its address, the model's status over v1 HTTP or
gRPC, the server-side statistics between two snapshots, and the request
bytes every load process sends (built once, here).

Like perf_client, every request asks for all of the model's outputs as raw
tensors and carries random inputs (or zeros with ``zero_input``) of the
requested batch size.
"""

from __future__ import annotations

import http.client
import struct
from dataclasses import dataclass

import numpy as np

from pyserver.protos import api_pb2, grpc_service_pb2, model_config_pb2 as mc
from pyserver.protos import request_status_pb2, server_status_pb2 as ss

from .measurement import ServerSide

GRPC_INFER = "/nvidia.inferenceserver.GRPCService/Infer"
GRPC_STREAM_INFER = "/nvidia.inferenceserver.GRPCService/StreamInfer"
GRPC_STATUS = "/nvidia.inferenceserver.GRPCService/Status"
STATUS_TIMEOUT_S = 10.0

_NUMPY = {
    mc.TYPE_BOOL: np.bool_, mc.TYPE_UINT8: np.uint8, mc.TYPE_UINT16: np.uint16,
    mc.TYPE_UINT32: np.uint32, mc.TYPE_UINT64: np.uint64, mc.TYPE_INT8: np.int8,
    mc.TYPE_INT16: np.int16, mc.TYPE_INT32: np.int32, mc.TYPE_INT64: np.int64,
    mc.TYPE_FP16: np.float16, mc.TYPE_FP32: np.float32, mc.TYPE_FP64: np.float64,
}


class PerfError(Exception):
    """A failure the tool reports in one line and exits on."""


@dataclass(frozen=True)
class Endpoint:
    protocol: str   # "http" or "grpc"
    host: str
    port: int

    @classmethod
    def parse(cls, url: str | None, protocol: str) -> "Endpoint":
        """``host:port`` (a leading scheme is tolerated); the v1 defaults are
        localhost:8000 for HTTP and localhost:8001 for gRPC."""
        protocol = protocol.lower()
        if protocol not in ("http", "grpc"):
            raise PerfError(f"unsupported protocol '{protocol}' (use http or grpc)")
        url = url or ("localhost:8001" if protocol == "grpc" else "localhost:8000")
        url = url.split("://", 1)[-1].rstrip("/")
        host, _, port = url.rpartition(":")
        if not host or not port.isdigit():
            raise PerfError(f"bad server URL '{url}': expected host:port")
        return cls(protocol, host.strip("[]"), int(port))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class StatusClient:
    """Reads the model's ServerStatus over the endpoint's protocol."""

    def __init__(self, endpoint: Endpoint, headers: dict[str, str] | None = None) -> None:
        self.endpoint = endpoint
        self.headers = headers or {}
        self._http: http.client.HTTPConnection | None = None
        self._grpc = None

    def status(self, model: str) -> ss.ServerStatus:
        if self.endpoint.protocol == "grpc":
            return self._grpc_status(model)
        return self._http_status(model)

    def _http_status(self, model: str) -> ss.ServerStatus:
        for attempt in (0, 1):   # a keep-alive connection the server closed: reconnect once
            if self._http is None:
                self._http = http.client.HTTPConnection(self.endpoint.host, self.endpoint.port,
                                                        timeout=STATUS_TIMEOUT_S)
            try:
                self._http.request("GET", f"/api/status/{model}?format=binary",
                                   headers=self.headers)
                response = self._http.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._http.close()
                self._http = None
                if attempt:
                    raise PerfError(f"cannot reach {self.endpoint.address} over HTTP: "
                                    f"{exc}") from None
        if response.status != 200:
            raise PerfError(f"status of '{model}' failed (HTTP {response.status}): "
                            f"{_status_text(response.getheader('NV-Status'))}")
        return ss.ServerStatus.FromString(body)

    def _grpc_status(self, model: str) -> ss.ServerStatus:
        import grpc

        if self._grpc is None:
            self._channel = grpc.insecure_channel(self.endpoint.address)
            self._grpc = self._channel.unary_unary(
                GRPC_STATUS, request_serializer=grpc_service_pb2.StatusRequest.SerializeToString,
                response_deserializer=grpc_service_pb2.StatusResponse.FromString)
        try:
            reply = self._grpc(grpc_service_pb2.StatusRequest(model_name=model),
                               timeout=STATUS_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise PerfError(f"gRPC Status from {self.endpoint.address}: "
                            f"{exc.code().name}: {exc.details()}")
        if reply.request_status.code != request_status_pb2.SUCCESS:
            raise PerfError(f"status of '{model}' failed: {reply.request_status.msg}")
        return reply.server_status

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._grpc is not None:
            self._channel.close()


def _status_text(header: str | None) -> str:
    if not header:
        return "no NV-Status header"
    from google.protobuf import text_format
    try:
        return text_format.Parse(header, request_status_pb2.RequestStatus()).msg or header
    except Exception:  # noqa: BLE001 - show the raw header
        return header


@dataclass
class ModelInfo:
    name: str
    version: int         # the version asked for; -1 = latest
    config: mc.ModelConfig

    @classmethod
    def from_status(cls, status: ss.ServerStatus, model: str, version: int) -> "ModelInfo":
        if model not in status.model_status:
            raise PerfError(f"server has no status for model '{model}'")
        return cls(model, version, status.model_status[model].config)


def stats_version(status: ss.ServerStatus, model: str, version: int) -> int:
    """The version whose statistics count: the one asked for, or with -1 the
    highest version key present (as perf_client)."""
    versions = status.model_status[model].version_status
    if not versions:
        raise PerfError(f"missing model version status for '{model}'")
    return version if version >= 0 else max(versions)


def infer_stats(status: ss.ServerStatus, model: str, version: int, batch_size: int):
    """``infer_stats[batch_size]`` of the version, or None before any request."""
    model_status = status.model_status.get(model)
    if model_status is None:
        raise PerfError(f"missing model status for '{model}'")
    v = stats_version(status, model, version)
    if v not in model_status.version_status:
        raise PerfError(f"missing model version status for '{model}' version {v}")
    stats = model_status.version_status[v].infer_stats
    return stats[batch_size] if batch_size in stats else None


def server_side(before: ss.ServerStatus, after: ss.ServerStatus, model: str, version: int,
                batch_size: int) -> ServerSide:
    """Averages of the requests the server finished between two snapshots."""
    b = infer_stats(before, model, version, batch_size)
    a = infer_stats(after, model, version, batch_size)
    if a is None:
        raise PerfError(f"missing inference stats for '{model}' batch size {batch_size}")

    def delta(name: str) -> tuple[int, int]:
        x = getattr(a, name)
        y = getattr(b, name) if b is not None else None
        return (x.count - (y.count if y else 0), x.total_time_ns - (y.total_time_ns if y else 0))

    count, request_ns = delta("success")
    _, queue_ns = delta("queue")
    _, compute_ns = delta("compute")
    if count <= 0:
        return ServerSide()
    return ServerSide(count, request_ns / count / 1000, queue_ns / count / 1000,
                      compute_ns / count / 1000)


# -- request bytes ------------------------------------------------------------------

def _input_dims(tensor: mc.ModelInput, shapes: dict[str, list[int]]) -> list[int]:
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        if tensor.name not in shapes:
            raise PerfError(f"input '{tensor.name}' has variable dims {dims}: "
                            f"give its shape with --shape {tensor.name}:d1,d2,...")
        dims = shapes[tensor.name]
    return dims


def input_tensors(config: mc.ModelConfig, batch_size: int, shapes: dict[str, list[int]],
                  zero: bool = False, string_length: int = 128,
                  seed: int = 0) -> list[tuple[str, list[int], bytes]]:
    """(name, dims, raw bytes of the whole batch) for every input."""
    rng = np.random.default_rng(seed)
    out = []
    for tensor in config.input:
        dims = _input_dims(tensor, shapes)
        count = int(np.prod(dims, dtype=np.int64)) * batch_size
        if tensor.data_type == mc.TYPE_STRING:
            element = (b"\0" * string_length if zero else
                       bytes(rng.integers(97, 123, string_length, dtype=np.uint8)))
            raw = (struct.pack("<I", len(element)) + element) * count
        elif tensor.data_type in _NUMPY:
            dtype = np.dtype(_NUMPY[tensor.data_type])
            if zero:
                raw = bytes(count * dtype.itemsize)
            elif dtype.kind == "f":
                raw = rng.random(count).astype(dtype).tobytes()
            elif dtype.kind == "b":
                raw = (rng.integers(0, 2, count) > 0).tobytes()
            else:
                raw = rng.integers(0, 100, count).astype(dtype).tobytes()
        else:
            raise PerfError(f"input '{tensor.name}': unsupported data type "
                            f"{mc.DataType.Name(tensor.data_type)}")
        out.append((tensor.name, dims, raw))
    return out


def request_header(config: mc.ModelConfig, batch_size: int,
                   inputs: list[tuple[str, list[int], bytes]]) -> api_pb2.InferRequestHeader:
    """All inputs with their dims and byte sizes; every output, raw."""
    header = api_pb2.InferRequestHeader(batch_size=batch_size)
    for name, dims, raw in inputs:
        header.input.add(name=name, dims=dims, batch_byte_size=len(raw))
    for output in config.output:
        header.output.add(name=output.name)
    return header


def check_batch_size(config: mc.ModelConfig, batch_size: int) -> None:
    if batch_size < 1:
        raise PerfError("batch size must be at least 1")
    limit = max(1, config.max_batch_size)
    if batch_size > limit:
        raise PerfError(f"expecting batch size <= {limit} for model '{config.name}'")


def http_request(endpoint: Endpoint, model: str, version: int, header: api_pb2.InferRequestHeader,
                 inputs: list[tuple[str, list[int], bytes]],
                 extra_headers: dict[str, str] | None = None) -> bytes:
    """The complete HTTP/1.1 request, head and body, sent as is by every connection."""
    from google.protobuf import text_format

    path = f"/api/infer/{model}" + (f"/{version}" if version >= 0 else "")
    body = b"".join(raw for _, _, raw in inputs)
    lines = [f"POST {path} HTTP/1.1", f"Host: {endpoint.address}",
             f"NV-InferRequest: {text_format.MessageToString(header, as_one_line=True)}",
             "Content-Type: application/octet-stream", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def grpc_request(model: str, version: int, header: api_pb2.InferRequestHeader,
                 inputs: list[tuple[str, list[int], bytes]]) -> bytes:
    """The serialized GRPCService.Infer request (raw_input, one entry per input)."""
    request = grpc_service_pb2.InferRequest(model_name=model, model_version=version,
                                            meta_data=header,
                                            raw_input=[raw for _, _, raw in inputs])
    return request.SerializeToString()
