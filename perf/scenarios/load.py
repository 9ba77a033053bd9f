"""Closed-loop load on a running server's v1 infer endpoint: HTTP, gRPC Infer or StreamInfer.

Prints req/s, p50/p90/p99 latency and the client's CPU per concurrency.

Each concurrent request is a keep-alive connection (HTTP) or a task on its process's
channel (gRPC; with ``--streaming`` a StreamInfer stream of its own) sending its next
request as soon as the answer is in. The request is built once from the model's status
(random inputs), so the client spends its time on sockets, not encoding. For perf_client's
windows, stability rule and CSV use pyserver-perf itself.
"""

from __future__ import annotations

import argparse

from ..harness.load import closed_loop, v1_request
from ..harness.options import add_levels, add_model, add_processes
from ..harness.report import table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default 8000, or 8001 with -i grpc")
    parser.add_argument("-i", "--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--streaming", action="store_true",
                        help="gRPC: StreamInfer, one stream per concurrent request")
    add_model(parser)
    add_levels(parser, [1])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0)
    add_processes(parser, 1)


def run(args: argparse.Namespace) -> int:
    if args.streaming and args.protocol != "grpc":
        raise SystemExit("error: --streaming needs -i grpc")
    port = args.port or (8001 if args.protocol == "grpc" else 8000)
    protocol = "grpc-stream" if args.streaming else args.protocol
    request = v1_request(protocol, port, args.model, args.batch_size, args.host)
    print(f"# {args.host}:{port} {protocol}, model {args.model}, batch {args.batch_size}, "
          f"{args.seconds:g} s per level, {args.processes} client process(es)")
    rows = []
    for concurrency in args.concurrency:
        r = closed_loop(protocol, port, request, concurrency, args.seconds, args.warmup,
                        args.processes, host=args.host)
        rows.append([concurrency, f"{r.rps:.0f}", f"{r.p50_us:.0f}", f"{r.p90_us:.0f}",
                     f"{r.p99_us:.0f}", r.errors, f"{r.client_cpu:.0%}"])
    print(table(["concurrency", "req/s", "p50 µs", "p90 µs", "p99 µs", "errors", "client CPU"],
                rows))
    return 0
