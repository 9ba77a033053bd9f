"""v1 (or v2) HTTP infer through each HTTP parser, beside the bare h11 echo and optionally another install.

Alternating rounds of closed-loop load; per server and concurrency the medians of req/s,
p50/p99 latency and the server's CPU per request.

Servers (``--servers``, comma-separated): ``httptools`` and ``h11`` (this install with each
parser), ``echo`` (the bare asyncio + h11 echo of the same request, the parser's ceiling),
and with ``--baseline-python`` or ``--baseline-pythonpath`` ``baseline`` (the other install
with its default parser, e.g. the previous commit's build: a change measured against what
it replaces on the same load; ``--servers httptools,baseline`` for an A/B alone). Medians
per concurrency over the example store; the server's CPU per request is the steadier
figure on a noisy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from pyserver.examples.store import build_example_store

from ..harness.load import v1_request, v2_http_request
from ..harness.options import (add_baseline, add_levels, add_model, add_rounds,
                               baseline_build)
from ..harness.processes import NO_REPOSITORY_POLLING, THIS_BUILD, h11_echo, pyserver
from ..harness.report import heading, table
from ..harness.rounds import Target, run_rounds

LABELS = {"httptools": "pyserver httptools", "h11": "pyserver h11", "echo": "h11 echo",
          "baseline": "baseline"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    add_levels(parser, [1, 8])
    add_rounds(parser, rounds=3, seconds=8.0, warmup=2.0)
    add_baseline(parser, "e.g. the previous commit's venv")
    parser.add_argument("--servers", help="comma-separated, from httptools, h11, echo, baseline "
                                          "(default: all, baseline when one is given)")
    parser.add_argument("--api", choices=["v1", "v2"], default="v1",
                        help="the infer API driven: v1 /api/infer, or v2 /v2/models/<m>/infer "
                             "with binary tensors as perf_analyzer sends them")
    parser.add_argument("--extra-flag", action="append", default=[],
                        help="extra flag for this install's servers, e.g. --extra-flag=--log-verbose=0")


def _servers(args: argparse.Namespace) -> list[str]:
    has_baseline = baseline_build(args) is not None
    names = (args.servers.split(",") if args.servers
             else ["httptools", "h11", "echo"] + (["baseline"] if has_baseline else []))
    unknown = [n for n in names if n not in LABELS]
    if unknown:
        raise SystemExit(f"error: unknown server(s): {', '.join(unknown)}")
    if "baseline" in names and not has_baseline:
        raise SystemExit("error: the baseline needs --baseline-python or --baseline-pythonpath")
    if names == ["echo"]:
        raise SystemExit("error: the echo alone has no model to build the request from")
    return names


def _start(name: str, args: argparse.Namespace, store: Path, work: Path,
           stack: contextlib.ExitStack) -> Target:
    if name == "echo":
        process, port = stack.enter_context(h11_echo(work))
        return Target(LABELS[name], port, b"", process.pid)
    if name == "baseline":
        server = stack.enter_context(pyserver(store, work, "baseline", baseline_build(args)))
    else:
        server = stack.enter_context(pyserver(
            store, work, name, THIS_BUILD,
            [*NO_REPOSITORY_POLLING, f"--http-parser={name}", *args.extra_flag]))
    target = Target(LABELS[name], server.http_port, b"", server.pid)
    target.request = (v2_http_request(server.http_port, args.model, args.batch_size)
                      if args.api == "v2" else
                      v1_request("http", server.http_port, args.model, args.batch_size))
    return target


def run(args: argparse.Namespace) -> int:
    names = _servers(args)
    work = Path(tempfile.mkdtemp(prefix="perf-v1-http-"))
    store = build_example_store(work / "store")
    with contextlib.ExitStack() as stack:
        targets = {name: _start(name, args, store, work, stack) for name in names}
        request = next(t.request for t in targets.values() if t.request)
        for target in targets.values():
            target.request = target.request or request
        run_rounds(list(targets.values()), args.concurrency, args.rounds, args.seconds,
                   args.warmup)
    echo = targets.get("echo")
    print(heading(f"{args.api} API, model {args.model} batch {args.batch_size}; {args.rounds} rounds x "
                  f"{args.seconds:g} s; medians"))
    rows = []
    for c in args.concurrency:
        for target in targets.values():
            row = [target.label, c, *target.cells(c, "rps", "p50_us", "p99_us", "server_cpu_us"),
                   target.errors(c)]
            rows.append(row + (target.ratios(echo, c, "rps") if echo else []))
    print(table(["server", "concurrency", "req/s", "p50 µs", "p99 µs", "server CPU µs/req",
                 "errors"] + (["req/s vs echo"] if echo else []), rows))
    if "baseline" in targets and "httptools" in targets:
        this, base = targets["httptools"], targets["baseline"]
        print()
        print(table(["concurrency", "baseline CPU µs/req", "this CPU µs/req",
                     "CPU this / baseline", "req/s this / baseline"],
                    [[c, *base.cells(c, "server_cpu_us"), *this.cells(c, "server_cpu_us"),
                      *this.ratios(base, c, "server_cpu_us", "rps")] for c in args.concurrency]))
    return 0
