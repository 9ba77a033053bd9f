"""What one TensorFlow call costs from Python, by the ways a server could make it.

In this process, alternating rounds: ``Session.run`` (TF1 session, feed dict and fetch
names), ``make_callable`` (the same session's callable for fixed feeds and fetches) and
``signature`` (a TF2 SavedModel's concrete function called eagerly). pyserver's own
runtime (``TF_SessionRun`` from C++ on the instance thread) has no Python call to time:
``python -m perf tf-native`` measures it through the server. Models: FP32 perceptrons
``small`` (64 → 128 → 32) and ``mlp`` (512 → 1000 → 1000), batch 1 and 8, one intra-op and
one inter-op thread. The median over rounds of each round's median µs per call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..harness.frameworks import tensorflow_session
from ..harness.report import heading, table
from ..harness.timing import median_call_us

SIZES = {"small": (64, 128, 32), "mlp": (512, 1000, 1000)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per way, model and round")


def calls(size: str, batch: int, work: Path) -> dict[str, Callable[[], object]]:
    import tensorflow as tf

    from pyserver.examples import tensorflow_models

    n_in, hidden, n_out = SIZES[size]
    x = np.random.default_rng(0).standard_normal((batch, n_in)).astype(np.float32)
    session = tensorflow_session(tensorflow_models.graphdef_mlp(n_in, hidden, n_out))
    callable_ = session.make_callable(["OUTPUT0:0"], ["INPUT0:0"])
    saved = tensorflow_models.savedmodel_mlp(work / f"{size}.savedmodel", n_in, hidden, n_out)
    signature = tf.saved_model.load(str(saved)).signatures["serving_default"]
    x_tensor = tf.constant(x)
    return {
        "Session.run": lambda: session.run(["OUTPUT0:0"], {"INPUT0:0": x}),
        "make_callable": lambda: callable_(x),
        "signature": lambda: signature(INPUT0=x_tensor)["OUTPUT0"].numpy(),
    }


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    work = Path(tempfile.mkdtemp(prefix="perf-tf-call-"))
    cases = {(size, batch): calls(size, batch, work) for size in SIZES for batch in (1, 8)}
    results: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(args.rounds):
        for case, ways in cases.items():
            for name, call in ways.items():
                results.setdefault((*case, name), []).append(median_call_us(call, args.seconds))
    print(heading(f"tensorflow {tf.__version__}, {args.rounds} rounds x {args.seconds:g} s per "
                  f"way; median µs per call"))
    names = list(next(iter(cases.values())))
    print(table(["model", "batch", *names],
                [[size, batch, *(f"{statistics.median(results[(size, batch, n)]):.0f}"
                                 for n in names)] for size, batch in cases]))
    return 0
