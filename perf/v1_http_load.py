"""Closed-loop load on the v1 HTTP infer endpoint: N keep-alive connections,
each sending its next request when the previous answer arrives.

    python perf/v1_http_load.py --port 8000 --model simple -c 1 -c 8 --seconds 10

Prints requests/s and p50/p90/p99 latency per concurrency. Requests are
built once from the model's status (random inputs), so the client spends
its time on sockets, not on encoding. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import os
import resource
import statistics
import sys
import time

import numpy as np

from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss
from pyserver.tensors import NUMPY_DTYPES


def model_config(host: str, port: int, model: str) -> mc.ModelConfig:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", f"/api/status/{model}?format=binary")
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        sys.exit(f"status of '{model}' failed: {response.getheader('NV-Status')}")
    status = ss.ServerStatus()
    status.ParseFromString(body)
    return status.model_status[model].config


def build_request(host: str, port: int, model: str, batch_size: int) -> bytes:
    config = model_config(host, port, model)
    rng = np.random.default_rng(0)
    parts, body = [f"batch_size: {batch_size}"], []
    for tensor in config.input:
        dims = [d if d > 0 else 1 for d in tensor.dims]
        shape = ([batch_size] if config.max_batch_size > 0 else []) + dims
        dtype = NUMPY_DTYPES[tensor.data_type]
        body.append(rng.random(shape).astype(dtype).tobytes())
        parts.append(f'input {{ name: "{tensor.name}" dims: [{", ".join(map(str, dims))}] }}')
    parts += [f'output {{ name: "{o.name}" }}' for o in config.output]
    payload = b"".join(body)
    head = (f"POST /api/infer/{model}?format=binary HTTP/1.1\r\nHost: {host}\r\n"
            f"NV-InferRequest: {' '.join(parts)}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


async def _connection(host: str, port: int, request: bytes, stop_at: float, measure_from: float,
                      latencies: list[int], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            start = time.perf_counter_ns()
            if start / 1e9 >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            end = time.perf_counter_ns()
            if start / 1e9 >= measure_from:
                if status == b"200":
                    latencies.append(end - start)
                else:
                    errors.append(1)
    finally:
        writer.close()


def _worker(args: tuple) -> tuple[list[int], int, float]:
    host, port, request, connections, warmup, seconds = args
    latencies: list[int] = []
    errors: list[int] = []

    async def run() -> None:
        now = time.perf_counter()
        measure_from, stop_at = now + warmup, now + warmup + seconds
        await asyncio.gather(*(_connection(host, port, request, stop_at, measure_from,
                                           latencies, errors) for _ in range(connections)))

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    asyncio.run(run())
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return latencies, len(errors), cpu


def split_load(concurrency: int, processes: int) -> list[int]:
    """Connections per client process for one concurrency level."""
    processes = max(1, min(processes, concurrency))
    return [concurrency // processes + (1 if i < concurrency % processes else 0)
            for i in range(processes)]


def summarize(results: list[tuple[list[int], int, float]], concurrency: int, seconds: float,
              warmup: float) -> dict:
    """Merges the workers' (latencies ns, errors, cpu s) into one level's figures."""
    latencies = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    cpu = sum(r[2] for r in results)

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] / 1000

    return {"concurrency": concurrency, "rps": len(latencies) / seconds, "errors": errors,
            "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
            "mean_us": statistics.fmean(latencies) / 1000 if latencies else 0.0,
            "client_cpu": cpu / (seconds + warmup)}


def measure(host: str, port: int, request: bytes, concurrency: int, seconds: float,
            warmup: float, processes: int) -> dict:
    shares = split_load(concurrency, processes)
    with multiprocessing.get_context("fork").Pool(len(shares)) as pool:
        results = pool.map(_worker, [(host, port, request, n, warmup, seconds) for n in shares])
    return summarize(results, concurrency, seconds, warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="simple")
    p.add_argument("-b", "--batch-size", type=int, default=1)
    p.add_argument("-c", "--concurrency", type=int, action="append")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--processes", type=int, default=1,
                   help="client processes (the load is split between them)")
    args = p.parse_args()
    request = build_request(args.host, args.port, args.model, args.batch_size)
    print(f"model {args.model}, batch {args.batch_size}, {args.seconds:.0f} s per level, "
          f"{args.processes} client process(es), pid {os.getpid()}")
    print(f"{'conc':>5} {'req/s':>9} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} {'errors':>7} {'client cpu':>10}")
    for concurrency in args.concurrency or [1]:
        r = measure(args.host, args.port, request, concurrency, args.seconds, args.warmup,
                    args.processes)
        print(f"{r['concurrency']:>5} {r['rps']:>9.0f} {r['p50_us']:>9.0f} {r['p90_us']:>9.0f} "
              f"{r['p99_us']:>9.0f} {r['errors']:>7} {r['client_cpu']:>9.0%}", flush=True)


if __name__ == "__main__":
    main()
