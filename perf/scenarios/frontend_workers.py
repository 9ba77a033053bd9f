"""The front-end workers' hop and scaling: the same server with --frontend-workers N for each N.

Alternating rounds of closed-loop load, v1 HTTP or v1 gRPC (``--protocol``), one server per
worker count (``--workers 1,2``), all started before the first round. Per worker count and
concurrency the medians of req/s, p50/p99 latency and the server's CPU per request — the
engine and its worker processes together — and each figure's ratio to workers=1: at c=1
the hop's cost, at high concurrency the scaling (on a machine with the cores for it).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from pyserver.examples.store import build_example_store

from ..harness.load import v1_request
from ..harness.options import add_levels, add_model, add_processes, add_rounds
from ..harness.processes import NO_REPOSITORY_POLLING, THIS_BUILD, pyserver
from ..harness.report import heading, table
from ..harness.rounds import Target, run_rounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    add_levels(parser, [1, 64])
    add_rounds(parser, rounds=3, seconds=5.0, warmup=1.0)
    add_processes(parser, 2)
    parser.add_argument("--workers", default="1,2",
                        help="comma-separated --frontend-workers values (default 1,2)")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http",
                        help="v1 HTTP or v1 gRPC (default http)")
    parser.add_argument("--extra-flag", action="append", default=[],
                        help="extra flag for every server, e.g. --extra-flag=--http-parser=h11")


def run(args: argparse.Namespace) -> int:
    counts = [int(n) for n in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="perf-workers-"))
    store = build_example_store(work / "store")
    targets: dict[int, Target] = {}
    with contextlib.ExitStack() as stack:
        for count in counts:
            server = stack.enter_context(pyserver(
                store, work, f"workers-{count}", THIS_BUILD,
                [*NO_REPOSITORY_POLLING, f"--frontend-workers={count}", *args.extra_flag]))
            port = server.http_port if args.protocol == "http" else server.grpc_port
            targets[count] = Target(f"workers={count}", port,
                                    v1_request(args.protocol, port, args.model, args.batch_size),
                                    server.pid, server_tree=True, protocol=args.protocol,
                                    processes=args.processes)
        run_rounds(list(targets.values()), args.concurrency, args.rounds, args.seconds,
                   args.warmup)
    first = targets[counts[0]]
    print(heading(f"v1 {args.protocol}, model {args.model} batch {args.batch_size}; "
                  f"{args.rounds} rounds x {args.seconds:g} s; medians; ratios to "
                  f"{first.label}"))
    rows = []
    for c in args.concurrency:
        for target in targets.values():
            rows.append([target.label, c,
                         *target.cells(c, "rps", "p50_us", "p99_us", "server_cpu_us"),
                         target.errors(c),
                         *target.ratios(first, c, "rps", "p50_us", "server_cpu_us")])
    print(table(["server", "concurrency", "req/s", "p50 µs", "p99 µs",
                 "server CPU µs/req", "errors", "req/s ratio", "p50 ratio", "CPU ratio"], rows))
    return 0
