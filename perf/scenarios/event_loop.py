"""The same server on asyncio's own event loop and on uvloop, over v1 HTTP, v2 HTTP or v1 gRPC.

One server per loop (``--event-loop=asyncio`` and ``--event-loop=uvloop``), both started
before the first round; alternating rounds of closed-loop load on the example store. Per loop
and concurrency the medians of req/s, p50 latency and the server's CPU per request, and the
uvloop / asyncio ratios. ``--api`` picks the request: v1 HTTP, v2 HTTP (binary tensors, as
perf_analyzer sends them) or v1 gRPC ``Infer``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from pyserver.examples.store import build_example_store

from ..harness.load import v1_request, v2_http_request
from ..harness.options import add_levels, add_model, add_rounds
from ..harness.processes import NO_REPOSITORY_POLLING, THIS_BUILD, pyserver
from ..harness.report import heading, table
from ..harness.rounds import Target, run_rounds

LOOPS = ("asyncio", "uvloop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    add_levels(parser, [1, 8])
    add_rounds(parser, rounds=3, seconds=5.0, warmup=1.5)
    parser.add_argument("--api", choices=("v1-http", "v2-http", "grpc"), default="v2-http")


def _target(loop: str, api: str, server, model: str, batch_size: int) -> Target:
    if api == "grpc":
        port = server.grpc_port
        return Target(loop, port, v1_request("grpc", port, model, batch_size), server.pid,
                      protocol="grpc")
    port = server.http_port
    request = (v2_http_request(port, model, batch_size) if api == "v2-http"
               else v1_request("http", port, model, batch_size))
    return Target(loop, port, request, server.pid)


def run(args: argparse.Namespace) -> int:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        raise SystemExit("error: uvloop is not installed in this install") from None
    work = Path(tempfile.mkdtemp(prefix="perf-event-loop-"))
    store = build_example_store(work / "store")
    with contextlib.ExitStack() as stack:
        targets = {}
        for loop in LOOPS:
            server = stack.enter_context(pyserver(
                store, work, loop, THIS_BUILD, [*NO_REPOSITORY_POLLING, f"--event-loop={loop}"]))
            targets[loop] = _target(loop, args.api, server, args.model, args.batch_size)
        run_rounds(list(targets.values()), args.concurrency, args.rounds, args.seconds,
                   args.warmup)
    base, other = targets["asyncio"], targets["uvloop"]
    print(heading(f"{args.api}, model {args.model} batch {args.batch_size}; {args.rounds} "
                  f"rounds x {args.seconds:g} s; medians"))
    rows = []
    for c in args.concurrency:
        for target in (base, other):
            rows.append([target.label, c, *target.cells(c, "rps", "p50_us", "server_cpu_us"),
                         target.errors(c)])
    print(table(["event loop", "concurrency", "req/s", "p50 µs", "server CPU µs/req", "errors"],
                rows))
    print()
    print(table(["concurrency", "req/s uvloop / asyncio", "p50 uvloop / asyncio",
                 "CPU uvloop / asyncio"],
                [[c, *other.ratios(base, c, "rps", "p50_us", "server_cpu_us")]
                 for c in args.concurrency]))
    return 0
