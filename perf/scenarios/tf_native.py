"""TensorFlow GraphDef models served by this install beside a baseline install, and TF in-process.

Written for the native TensorFlow runtime (``TF_SessionRun`` from C++ on the instance
thread) against the previous ctypes one, whose interpreter ``--baseline-python`` names
(without a baseline only this install is measured). Models: FP32 perceptrons ``small``
(64 → 128 → 32) and ``mlp`` (512 → 1000 → 1000), requests of ``-b`` rows, one CPU instance,
direct scheduling, one intra-op and one inter-op thread; v1 HTTP over keep-alive
connections. Medians over alternating rounds of req/s, p50 and the server's CPU per
request, and each round TensorFlow's own fastest Python call (``make_callable``) of the
same graph and batch in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from ..harness.builds import side_by_side, targets_per_build, this_and_baseline
from ..harness.frameworks import tensorflow_session
from ..harness.options import (add_baseline, add_batch_sizes, add_levels, add_rounds,
                               baseline_build)
from ..harness.report import heading, table
from ..harness.rounds import run_rounds
from ..harness.timing import median_call_us

SIZES = {"small": (64, 128, 32), "mlp": (512, 1000, 1000)}
LABELS = {"this": "this install", "baseline": "baseline"}
FIGURES = ("rps", "p50_us", "server_cpu_us")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_baseline(parser, "the previous TensorFlow runtime")
    add_levels(parser, [1])
    add_batch_sizes(parser, [1, 8])
    add_rounds(parser, rounds=3, seconds=4.0, warmup=1.0)


def write_store(root: Path) -> dict[str, bytes]:
    from pyserver.examples import tensorflow_models

    graphdefs = {}
    for name, (n_in, hidden, n_out) in SIZES.items():
        graphdefs[name] = tensorflow_models.graphdef_mlp(n_in, hidden, n_out)
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.graphdef").write_bytes(graphdefs[name])
        (root / name / "config.pbtxt").write_text(
            f'name: "{name}"\nplatform: "tensorflow_graphdef"\nmax_batch_size: 8\n'
            f'input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {n_in} ] }} ]\n'
            f'output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {n_out} ] }} ]\n'
            "instance_group [ { count: 1 kind: KIND_CPU } ]\n")
    return graphdefs


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(tempfile.mkdtemp(prefix="perf-tf-native-"))
    graphdefs = write_store(work / "store")
    keys = [(model, batch) for model in SIZES for batch in args.batch_size]
    rng = np.random.default_rng(0)
    calls = {}
    for model, batch in keys:
        callable_ = tensorflow_session(graphdefs[model]).make_callable(["OUTPUT0:0"], ["INPUT0:0"])
        x = rng.standard_normal((batch, SIZES[model][0])).astype(np.float32)
        calls[(model, batch)] = lambda c=callable_, x=x: c(x)
    in_process: dict[tuple[str, int], list[float]] = {key: [] for key in keys}

    def measure_in_process(_round: int) -> None:
        for key in keys:
            in_process[key].append(median_call_us(calls[key], args.seconds / 2))

    with this_and_baseline(work / "store", work, baseline_build(args)) as servers:
        targets = targets_per_build(servers, {key: key for key in keys})
        run_rounds(list(targets.values()), args.concurrency, args.rounds, args.seconds,
                   args.warmup, measure_in_process)
    print(heading(f"v1 HTTP; {args.rounds} alternating rounds x {args.seconds:g} s; medians"))
    ratios = ([f"{f} this / baseline" for f in ("req/s", "p50", "CPU/req")]
              if len(servers) > 1 else [])
    print(table(["model", "batch", "install", "c", "req/s", "p50 µs", "server CPU µs/req",
                 "errors", *ratios],
                side_by_side(targets, keys, args.concurrency, list, LABELS, FIGURES, FIGURES)))
    print()
    print(table(["model", "batch", "TF in-process (make_callable) p50 µs"],
                [[*key, f"{statistics.median(in_process[key]):.0f}"] for key in keys]))
    return 0
