"""The same build with two sets of server flags side by side (A against B), over v1 HTTP,
v2 HTTP or v1 gRPC.

One server per flag set, both started before the first round, then alternating rounds of
closed-loop load on the example store; per set and concurrency the medians of req/s, p50
latency and the server's CPU per request, and the B / A ratios. For a switch whose worth
is a measurement, e.g. ``--a=--inline-execution-limit-us=0 --b=`` (requests run on the
instance threads against the default) or ``--a=--event-loop=asyncio --b=--event-loop=uvloop``.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import tempfile
from pathlib import Path

from pyserver.examples.store import build_example_store

from ..harness.load import v1_request, v2_http_request
from ..harness.options import add_levels, add_model, add_rounds
from ..harness.processes import NO_REPOSITORY_POLLING, THIS_BUILD, pyserver
from ..harness.report import heading, table
from ..harness.rounds import Target, run_rounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    add_levels(parser, [1, 8])
    add_rounds(parser, rounds=3, seconds=5.0, warmup=1.5)
    parser.add_argument("--api", choices=("v1-http", "v2-http", "grpc"), default="v1-http")
    parser.add_argument("--a", default="", metavar="FLAGS", help="flags of server A (shell words)")
    parser.add_argument("--b", default="", metavar="FLAGS", help="flags of server B (shell words)")


def _target(label: str, api: str, server, model: str, batch_size: int) -> Target:
    if api == "grpc":
        port = server.grpc_port
        return Target(label, port, v1_request("grpc", port, model, batch_size), server.pid,
                      protocol="grpc")
    port = server.http_port
    request = (v2_http_request(port, model, batch_size) if api == "v2-http"
               else v1_request("http", port, model, batch_size))
    return Target(label, port, request, server.pid)


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="perf-flag-ab-"))
    store = build_example_store(work / "store")
    labels = {"A": args.a or "(defaults)", "B": args.b or "(defaults)"}
    with contextlib.ExitStack() as stack:
        targets = {}
        for name, flags in (("A", args.a), ("B", args.b)):
            server = stack.enter_context(pyserver(
                store, work, name, THIS_BUILD, [*NO_REPOSITORY_POLLING, *shlex.split(flags)]))
            targets[name] = _target(name, args.api, server, args.model, args.batch_size)
        run_rounds(list(targets.values()), args.concurrency, args.rounds, args.seconds,
                   args.warmup)
    a, b = targets["A"], targets["B"]
    print(heading(f"{args.api}, model {args.model} batch {args.batch_size}; A: {labels['A']}; "
                  f"B: {labels['B']}; {args.rounds} rounds x {args.seconds:g} s; medians"))
    rows = []
    for c in args.concurrency:
        for target in (a, b):
            rows.append([target.label, c, *target.cells(c, "rps", "p50_us", "server_cpu_us"),
                         target.errors(c)])
    print(table(["server", "concurrency", "req/s", "p50 µs", "server CPU µs/req", "errors"],
                rows))
    print()
    print(table(["concurrency", "req/s B / A", "p50 B / A", "CPU B / A"],
                [[c, *b.ratios(a, c, "rps", "p50_us", "server_cpu_us")]
                 for c in args.concurrency]))
    return 0
