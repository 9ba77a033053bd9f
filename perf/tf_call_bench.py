"""What one TensorFlow call costs, by the ways a server can make it, in one
process, alternating rounds:

    python perf/tf_call_bench.py --rounds 5 --seconds 1.5

- ``Session.run``: TF1-style Python session, feed dict and fetch names;
- ``make_callable``: the same session's callable for fixed feeds and fetches;
- ``signature``: a TF2 SavedModel's concrete function, called eagerly.

pyserver's own runtime (``TF_SessionRun`` from C++ on the instance thread) has
no Python call to time; perf/tf_native_bench.py measures it through the
server beside TensorFlow in-process.

Models: FP32 perceptrons ``small`` (64 -> 128 -> 32) and ``mlp`` (512 -> 1000
-> 1000), batch 1 and 8; one intra-op and one inter-op thread everywhere.
Prints the median over rounds of each round's median µs per call.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from pyserver.examples import tensorflow_models as tm  # noqa: E402

SIZES = {"small": (64, 128, 32), "mlp": (512, 1000, 1000)}


def per_call_us(call, seconds: float) -> float:
    for _ in range(50):
        call()
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def callers(size: str, batch: int, work: pathlib.Path) -> dict:
    n_in, hidden, n_out = SIZES[size]
    graphdef = tm.graphdef_mlp(n_in, hidden, n_out)
    x = np.random.default_rng(0).standard_normal((batch, n_in)).astype(np.float32)
    config_proto = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1,
                                            inter_op_parallelism_threads=1,
                                            use_per_session_threads=True)
    graph = tf.Graph()
    with graph.as_default():
        definition = tf.compat.v1.GraphDef()
        definition.ParseFromString(graphdef)
        tf.import_graph_def(definition, name="")
    session = tf.compat.v1.Session(graph=graph, config=config_proto)
    callable_ = session.make_callable(["OUTPUT0:0"], ["INPUT0:0"])
    saved = tm.savedmodel_mlp(work / f"{size}.savedmodel", n_in, hidden, n_out)
    signature = tf.saved_model.load(str(saved)).signatures["serving_default"]
    x_tensor = tf.constant(x)
    return {
        "Session.run": lambda: session.run(["OUTPUT0:0"], {"INPUT0:0": x}),
        "make_callable": lambda: callable_(x),
        "signature": lambda: signature(INPUT0=x_tensor)["OUTPUT0"].numpy(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.5)
    args = p.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-tf-bench-"))
    cases = {(size, batch): callers(size, batch, work) for size in SIZES for batch in (1, 8)}
    results: dict[tuple, list[float]] = {}
    for _ in range(args.rounds):
        for case, calls in cases.items():
            for name, call in calls.items():
                results.setdefault((*case, name), []).append(per_call_us(call, args.seconds))
    print(f"# {time.strftime('%Y-%m-%d')} tensorflow {tf.__version__}, {os.cpu_count()} cpus, "
          f"{args.rounds} rounds x {args.seconds} s per way; median µs per call")
    names = list(next(iter(cases.values())))
    print("| model | batch | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for size, batch in cases:
        cells = [f"{statistics.median(results[(size, batch, n)]):.0f}" for n in names]
        print(f"| {size} | {batch} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
