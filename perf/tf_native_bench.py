"""TensorFlow through the server: the native runtime (this checkout) beside a
previous build (the ctypes runtime, before the native one), and beside
TensorFlow called in this process, in alternating rounds of one run:

    python perf/tf_native_bench.py --baseline-python /tmp/tf-baseline/bin/python \
        --rounds 3 --seconds 4 -c 1 -c 8

``--baseline-python`` is an interpreter with the previous commit's pyserver
installed (see perf/RESULTS.md for how it was built); without it only this
checkout is measured. Models: GraphDef FP32 perceptrons ``small`` (64 -> 128
-> 32) and ``mlp`` (512 -> 1000 -> 1000), requests of batch 1 and 8, one CPU
instance, direct scheduling, one intra-op and one inter-op thread; v1 HTTP
over keep-alive connections (perf/v1_http_load.py). Per row: medians over
rounds of req/s, p50 µs and the server's CPU µs per request (whole process),
and TensorFlow's own ``make_callable`` p50 µs for the same batch in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_http_load as load  # noqa: E402
from v1_http_bench import cpu_seconds, process  # noqa: E402

from pyserver.examples import tensorflow_models as tm  # noqa: E402

SIZES = {"small": (64, 128, 32), "mlp": (512, 1000, 1000)}


def write_store(root: pathlib.Path) -> dict[str, bytes]:
    graphdefs = {}
    for name, (n_in, hidden, n_out) in SIZES.items():
        graphdefs[name] = tm.graphdef_mlp(n_in, hidden, n_out)
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.graphdef").write_bytes(graphdefs[name])
        (root / name / "config.pbtxt").write_text(
            f'name: "{name}"\nplatform: "tensorflow_graphdef"\nmax_batch_size: 8\n'
            f'input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {n_in} ] }} ]\n'
            f'output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {n_out} ] }} ]\n'
            "instance_group [ { count: 1 kind: KIND_CPU } ]\n")
    return graphdefs


def in_process_us(graphdef: bytes, n_in: int, batch: int, seconds: float) -> float:
    """TensorFlow's fastest Python call of the graph: a session callable."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        definition = tf.compat.v1.GraphDef()
        definition.ParseFromString(graphdef)
        tf.import_graph_def(definition, name="")
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1,
                                      inter_op_parallelism_threads=1,
                                      use_per_session_threads=True)
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        call = session.make_callable(["OUTPUT0:0"], ["INPUT0:0"])
        x = np.random.default_rng(0).standard_normal((batch, n_in)).astype(np.float32)
        for _ in range(50):
            call(x)
        samples = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter_ns()
            call(x)
            samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline-python", help="interpreter with the previous pyserver")
    p.add_argument("-c", "--concurrency", type=int, action="append")
    p.add_argument("-b", "--batch-size", type=int, action="append")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--port", type=int, default=18950)
    args = p.parse_args()
    levels = args.concurrency or [1]
    batches = args.batch_size or [1, 8]
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-tf-"))
    graphdefs = write_store(work / "store")

    def command(python: str, port: int) -> list[str]:
        return [python, "-m", "pyserver", f"--model-store={work / 'store'}",
                "--http-address=127.0.0.1", f"--http-port={port}",
                "--grpc-address=127.0.0.1", f"--grpc-port={port + 10}",
                "--metrics-address=127.0.0.1", f"--metrics-port={port + 20}",
                "--repository-poll-secs=0"]

    servers = {"native": (sys.executable, args.port)}
    if args.baseline_python:
        servers["ctypes (previous)"] = (args.baseline_python, args.port + 1)
    results: dict[tuple, list[dict]] = {}
    framework: dict[tuple, list[float]] = {}
    with contextlib.ExitStack() as stack:
        pids = {}
        for name, (python, port) in servers.items():
            proc = stack.enter_context(process(
                command(python, port), f"http://127.0.0.1:{port}/api/health/ready",
                work / f"{name.split()[0]}.log"))
            pids[name] = proc.pid
        requests = {(m, b): load.build_request("127.0.0.1", args.port, m, b)
                    for m in SIZES for b in batches}
        for _ in range(args.rounds):
            for (model, batch), request in requests.items():
                for c in levels:
                    for name, (_, port) in servers.items():
                        cpu0 = cpu_seconds(pids[name])
                        r = load.measure("127.0.0.1", port, request, c, args.seconds,
                                         args.warmup, 1)
                        r["cpu_us"] = (cpu_seconds(pids[name]) - cpu0) / max(
                            1, r["rps"] * (args.seconds + args.warmup)) * 1e6
                        results.setdefault((model, batch, c, name), []).append(r)
                framework.setdefault((model, batch), []).append(
                    in_process_us(graphdefs[model], SIZES[model][0], batch, args.seconds / 2))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {os.cpu_count()} cpus; "
          f"v1 HTTP; {args.rounds} alternating rounds x {args.seconds:.0f} s; medians")
    print("| model | batch | c | server | req/s | p50 µs | server CPU µs/req | errors "
          "| TF in-process p50 µs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in SIZES:
        for batch in batches:
            tf_us = statistics.median(framework[(model, batch)])
            for c in levels:
                for name in servers:
                    rs = results[(model, batch, c, name)]
                    print(f"| {model} | {batch} | {c} | {name} | "
                          f"{statistics.median(r['rps'] for r in rs):.0f} | "
                          f"{statistics.median(r['p50_us'] for r in rs):.0f} | "
                          f"{statistics.median(r['cpu_us'] for r in rs):.0f} | "
                          f"{sum(r['errors'] for r in rs)} | {tf_us:.0f} |")
    if "ctypes (previous)" in servers:
        print()
        print("| model | batch | c | req/s native / previous | p50 native / previous "
              "| CPU/req native / previous |")
        print("|---|---|---|---|---|---|")
        for model in SIZES:
            for batch in batches:
                for c in levels:
                    new = results[(model, batch, c, "native")]
                    old = results[(model, batch, c, "ctypes (previous)")]

                    def ratio(key: str) -> float:
                        return (statistics.median(r[key] for r in new)
                                / statistics.median(r[key] for r in old))

                    print(f"| {model} | {batch} | {c} | {ratio('rps'):.2f} | "
                          f"{ratio('p50_us'):.2f} | {ratio('cpu_us'):.2f} |")


if __name__ == "__main__":
    main()
