"""ONNX models served by this install beside a baseline install, and onnxruntime in-process.

Written for the native ONNX Runtime runtime (C API, no GIL on the instance thread) against
the previous Python one: ``--baseline-pythonpath DIR`` holds the previous build (``pip
install --no-deps --no-build-isolation --target DIR <checkout>``), or ``--baseline-python``
names another install's interpreter. Models: ``add`` (FP32[16] add/sub, direct), ``mlp``
(512 → 1000 → 1000 FP32, direct), ``mlp_batched`` (the same with dynamic batching, the
server forming batches of batch-1 requests). v1 HTTP, alternating rounds, medians; the
in-process table is onnxruntime's Python API with the server's session options.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..harness.builds import side_by_side, targets_per_build, this_and_baseline
from ..harness.frameworks import onnxruntime_ceilings
from ..harness.options import add_baseline, add_levels, add_processes, add_rounds, baseline_build
from ..harness.report import heading, table
from ..harness.rounds import run_rounds
from ..harness.stores import MAX_BATCH, onnx_model, write_onnx_model

MODELS = {"add": "add", "mlp": "mlp", "mlp_batched": "mlp"}
LABELS = {"this": "this install", "baseline": "baseline"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_baseline(parser, "the previous runtime")
    add_levels(parser, [1, 8])
    add_rounds(parser, rounds=3, seconds=5.0, warmup=1.5)
    parser.add_argument("--delay-us", type=int, default=2000,
                        help="max_queue_delay_microseconds of mlp_batched")
    parser.add_argument("--ceiling-seconds", type=float, default=2.0,
                        help="seconds per in-process onnxruntime figure (default 2)")
    add_processes(parser, 1)
    parser.add_argument("--model", action="append", choices=list(MODELS),
                        help="models to measure, repeatable (default: all)")


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="perf-onnx-runtime-"))
    onnx = {kind: onnx_model(kind) for kind in set(MODELS.values())}
    for name, kind in MODELS.items():
        write_onnx_model(work / "store", name, kind, onnx[kind],
                         args.delay_us if name.endswith("_batched") else None)
    models = args.model or list(MODELS)
    with this_and_baseline(work / "store", work, baseline_build(args)) as servers:
        targets = targets_per_build(servers, {m: (m, 1) for m in models}, args.processes)
        run_rounds(list(targets.values()), args.concurrency, args.rounds, args.seconds,
                   args.warmup)
    print(heading(f"batch-1 requests over v1 HTTP; {args.rounds} rounds x {args.seconds:g} s; "
                  f"medians; {args.processes} client process(es)"))
    ratios = ["req/s this / baseline", "CPU this / baseline"] if len(servers) > 1 else []
    print(table(["model", "install", "concurrency", "req/s", "p50 µs", "p99 µs",
                 "server CPU µs/req", "errors", *ratios],
                side_by_side(targets, models, args.concurrency, lambda m: [m], LABELS)))
    print()
    print(onnxruntime_ceilings({k: onnx[k] for k in sorted({MODELS[m] for m in models})},
                               seconds=args.ceiling_seconds, batches=(1, 8, MAX_BATCH)))
    return 0
