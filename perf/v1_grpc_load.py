"""Closed-loop load on the v1 gRPC Infer RPC: N concurrent callers, each on
its own channel, each sending its next request when the previous answer
arrives (grpc.aio client).

    python perf/v1_grpc_load.py --port 8001 --model simple -c 1 -c 8 --seconds 10 [--stream]

Prints requests/s and p50/p90/p99 latency per concurrency. The request is
built once from the model's status (random inputs) and sent as pre-encoded
bytes, so the client spends its time in grpc, not in protobuf. ``--stream``
sends the requests over one StreamInfer stream per caller instead. A
response whose request_status is not SUCCESS counts as an error. Loopback
only.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import time

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from v1_http_load import split_load, summarize  # noqa: E402

from pyserver.protos import grpc_service_pb2 as gs  # noqa: E402
from pyserver.protos import model_config_pb2 as mc  # noqa: E402
from pyserver.tensors import NUMPY_DTYPES  # noqa: E402

SERVICE = "/nvidia.inferenceserver.GRPCService/"


def model_config(target: str, model: str) -> mc.ModelConfig:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(SERVICE + "Status",
                                   request_serializer=gs.StatusRequest.SerializeToString,
                                   response_deserializer=gs.StatusResponse.FromString)
        response = call(gs.StatusRequest(model_name=model), timeout=10)
    if response.request_status.code != 1:
        sys.exit(f"status of '{model}' failed: {response.request_status.msg}")
    return response.server_status.model_status[model].config


def build_request(target: str, model: str, batch_size: int) -> bytes:
    config = model_config(target, model)
    rng = np.random.default_rng(0)
    request = gs.InferRequest(model_name=model, model_version=-1)
    request.meta_data.batch_size = batch_size
    for tensor in config.input:
        dims = [d if d > 0 else 1 for d in tensor.dims]
        shape = ([batch_size] if config.max_batch_size > 0 else []) + dims
        request.meta_data.input.add(name=tensor.name, dims=dims)
        request.raw_input.append(rng.random(shape).astype(NUMPY_DTYPES[tensor.data_type]).tobytes())
    for output in config.output:
        request.meta_data.output.add(name=output.name)
    return request.SerializeToString()


def _succeeded(response: bytes) -> bool:
    return gs.InferResponse.FromString(response).request_status.code == 1


async def _caller(target: str, request: bytes, stop_at: float, measure_from: float,
                  latencies: list[int], errors: list[int], stream: bool) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        if stream:
            call = channel.stream_stream(SERVICE + "StreamInfer")()
        else:
            infer = channel.unary_unary(SERVICE + "Infer")
        while True:
            start = time.perf_counter_ns()
            if start / 1e9 >= stop_at:
                break
            if stream:
                await call.write(request)
                response = await call.read()
            else:
                response = await infer(request)
            end = time.perf_counter_ns()
            if start / 1e9 >= measure_from:
                if _succeeded(response):
                    latencies.append(end - start)
                else:
                    errors.append(1)
        if stream:
            await call.done_writing()


def _worker(args: tuple) -> tuple[list[int], int, float]:
    target, request, callers, warmup, seconds, stream = args
    latencies: list[int] = []
    errors: list[int] = []

    async def run() -> None:
        now = time.perf_counter()
        measure_from, stop_at = now + warmup, now + warmup + seconds
        await asyncio.gather(*(_caller(target, request, stop_at, measure_from, latencies, errors,
                                       stream) for _ in range(callers)))

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    asyncio.run(run())
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return latencies, len(errors), cpu


def measure(target: str, request: bytes, concurrency: int, seconds: float, warmup: float,
            processes: int, stream: bool = False) -> dict:
    """One level: requests/s, latency percentiles (µs), errors, client CPU."""
    shares = split_load(concurrency, processes)
    with multiprocessing.get_context("spawn").Pool(len(shares)) as pool:
        results = pool.map(_worker, [(target, request, n, warmup, seconds, stream)
                                     for n in shares])
    return summarize(results, concurrency, seconds, warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--model", default="simple")
    p.add_argument("-b", "--batch-size", type=int, default=1)
    p.add_argument("-c", "--concurrency", type=int, action="append")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--processes", type=int, default=1,
                   help="client processes (the load is split between them)")
    p.add_argument("--stream", action="store_true", help="use StreamInfer, one stream per caller")
    args = p.parse_args()
    target = f"{args.host}:{args.port}"
    request = build_request(target, args.model, args.batch_size)
    rpc = "StreamInfer" if args.stream else "Infer"
    print(f"model {args.model}, batch {args.batch_size}, {rpc}, {args.seconds:.0f} s per level, "
          f"{args.processes} client process(es), pid {os.getpid()}")
    print(f"{'conc':>5} {'req/s':>9} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} {'errors':>7} "
          f"{'client cpu':>10}")
    for concurrency in args.concurrency or [1]:
        r = measure(target, request, concurrency, args.seconds, args.warmup, args.processes,
                    args.stream)
        print(f"{r['concurrency']:>5} {r['rps']:>9.0f} {r['p50_us']:>9.0f} {r['p90_us']:>9.0f} "
              f"{r['p99_us']:>9.0f} {r['errors']:>7} {r['client_cpu']:>9.0%}", flush=True)


if __name__ == "__main__":
    main()
