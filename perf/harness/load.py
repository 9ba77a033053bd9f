"""Closed-loop load through pyserver-perf's load processes: the request bytes a model's
status calls for (v1 HTTP or gRPC), and one level measured after a warm-up: requests/s,
latency percentiles, errors, the client's CPU and the server's CPU per answered request."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..pyserver_perf.load import LoadManager, LoadSpec
from ..pyserver_perf.measurement import percentile_index
from ..pyserver_perf.target import (Endpoint, StatusClient, grpc_request, http_request,
                                    input_tensors, request_header)
from .cpu import cpu_seconds
from .processes import HOST

PROTOCOLS = ("http", "grpc", "grpc-stream")


@dataclass
class LevelFigures:
    concurrency: int
    requests: int
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    errors: int
    client_cpu: float                 # the load processes' CPU ÷ wall time (1.0 = one core)
    server_cpu_us: float = math.nan   # the server's CPU over the level ÷ requests answered


def v1_request(protocol: str, port: int, model: str, batch_size: int = 1,
               host: str = HOST) -> bytes:
    """The v1 infer request for ``model`` (random inputs, every output raw), built once from
    its status: the whole HTTP request, or the serialized gRPC InferRequest."""
    wire = "http" if protocol == "http" else "grpc"
    endpoint = Endpoint(wire, host, port)
    status = StatusClient(endpoint)
    try:
        config = status.status(model).model_status[model].config
    finally:
        status.close()
    inputs = input_tensors(config, batch_size, {})
    header = request_header(config, batch_size, inputs)
    if wire == "http":
        return http_request(endpoint, model, -1, header, inputs)
    return grpc_request(model, -1, header, inputs)


def v2_http_request(port: int, model: str, batch_size: int = 1, host: str = HOST) -> bytes:
    """The v2 HTTP infer request for ``model`` as perf_analyzer sends it: random inputs as
    binary tensors after the JSON header, every output asked for as binary data."""
    import json

    endpoint = Endpoint("http", host, port)
    status = StatusClient(endpoint)
    try:
        config = status.status(model).model_status[model].config
    finally:
        status.close()
    inputs = input_tensors(config, batch_size, {})
    batch = [batch_size] if config.max_batch_size > 0 else []
    types = {t.name: t.data_type for t in config.input}
    doc = {"inputs": [{"name": name, "shape": batch + list(dims),
                       "datatype": _v2_datatype(types[name]),
                       "parameters": {"binary_data_size": len(raw)}}
                      for name, dims, raw in inputs],
           "outputs": [{"name": o.name, "parameters": {"binary_data": True}}
                       for o in config.output]}
    head = json.dumps(doc, separators=(",", ":")).encode()
    body = head + b"".join(raw for _, _, raw in inputs)
    lines = [f"POST /v2/models/{model}/infer HTTP/1.1", f"Host: {endpoint.address}",
             "Content-Type: application/octet-stream",
             f"Inference-Header-Content-Length: {len(head)}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _v2_datatype(v1_type: int) -> str:
    from pyserver.protos import model_config_pb2 as mc

    name = mc.DataType.Name(v1_type)[len("TYPE_"):]
    return "BYTES" if name == "STRING" else name


def _percentile_us(latencies_ns: list[int], p: int) -> float:
    return latencies_ns[percentile_index(p, len(latencies_ns))] / 1000 if latencies_ns else 0.0


def closed_loop(protocol: str, port: int, request: bytes, concurrency: int, seconds: float,
                warmup: float, processes: int = 1, server_pid: int | None = None,
                server_tree: bool = False, host: str = HOST) -> LevelFigures:
    """``concurrency`` requests in a closed loop for ``warmup`` + ``seconds``; the figures
    are those of the last ``seconds``."""
    spec = LoadSpec("http" if protocol == "http" else "grpc", host, port, request,
                    streaming=protocol == "grpc-stream")
    with LoadManager(spec, max(1, min(processes, concurrency))) as load:
        load.set_concurrency(concurrency)
        time.sleep(warmup)
        load.collect()
        cpu0 = cpu_seconds(server_pid, server_tree) if server_pid else 0.0
        time.sleep(seconds)
        collected = load.collect()
        cpu = cpu_seconds(server_pid, server_tree) - cpu0 if server_pid else math.nan
    latencies = sorted(e - s for s, e in zip(collected.starts_ns, collected.ends_ns))
    wall = max(collected.wall_s, 1e-6)
    return LevelFigures(
        concurrency=concurrency, requests=len(latencies), rps=len(latencies) / wall,
        p50_us=_percentile_us(latencies, 50), p90_us=_percentile_us(latencies, 90),
        p99_us=_percentile_us(latencies, 99), errors=collected.failed,
        client_cpu=sum(collected.cpu_s) / wall,
        server_cpu_us=cpu / max(1, len(latencies)) * 1e6)
