"""Dynamic batching against direct scheduling, and against onnxruntime in-process (the ceiling).

One server holds ``add`` (FP32[16] add/sub) and ``mlp`` (512 → 1000 → 1000 FP32), each twice:
``_direct`` and ``_batched`` (dynamic batching, preferred sizes 8/16/32, ``--delay-us``).
Clients send requests of ``-b`` rows over v1 HTTP and the server forms the batches. The
ceiling is the same ONNX model run in this process with the server's session options at
batch 1, 8 and 32. Every figure is in inferences/s (requests/s × rows per request).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..harness.frameworks import onnxruntime_ceilings
from ..harness.load import v1_request
from ..harness.options import add_levels, add_processes, add_rounds
from ..harness.processes import pyserver
from ..harness.report import heading, table
from ..harness.rounds import Target, run_rounds
from ..harness.stores import IO, MAX_BATCH, onnx_model, write_onnx_model

SCHEDULING = ("direct", "batched")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_levels(parser, [1, 8, 32])
    add_rounds(parser, rounds=1, seconds=6.0, warmup=1.5)
    parser.add_argument("--delay-us", type=int, default=2000, help="max_queue_delay_microseconds")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0,
                        help="seconds per in-process onnxruntime figure (default 3)")
    add_processes(parser, 2)
    parser.add_argument("-b", "--batch-size", type=int, default=1,
                        help="rows in each request (default 1)")


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="perf-batching-"))
    onnx = {kind: onnx_model(kind) for kind in IO}
    for kind in IO:
        write_onnx_model(work / "store", f"{kind}_direct", kind, onnx[kind])
        write_onnx_model(work / "store", f"{kind}_batched", kind, onnx[kind], args.delay_us)
    with pyserver(work / "store", work) as server:
        targets = {(kind, s): Target(f"{kind} {s}", server.http_port,
                                     v1_request("http", server.http_port, f"{kind}_{s}",
                                                args.batch_size),
                                     server.pid, processes=args.processes)
                   for kind in IO for s in SCHEDULING}
        run_rounds(list(targets.values()), args.concurrency, args.rounds, args.seconds,
                   args.warmup)
    print(heading(f"batch-{args.batch_size} requests over v1 HTTP; {args.rounds} round(s) x "
                  f"{args.seconds:g} s; max_queue_delay {args.delay_us} µs; "
                  f"{args.processes} client processes"))
    b = args.batch_size
    print(table(["model", "scheduling", "concurrency", "inferences/s", "p50 µs", "p99 µs",
                 "errors"],
                [[kind, s, c, f"{t.median(c, 'rps') * b:.0f}", *t.cells(c, "p50_us", "p99_us"),
                  t.errors(c)] for (kind, s), t in targets.items() for c in args.concurrency]))
    print()
    print(onnxruntime_ceilings(onnx, seconds=args.ceiling_seconds, batches=(1, 8, MAX_BATCH)))
    return 0
