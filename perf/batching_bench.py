"""Dynamic batching against direct scheduling and against onnxruntime called
in-process (the ceiling), in one run.

    python perf/batching_bench.py --seconds 6 -c 1 -c 8 -c 32

Serves two models, each twice (with and without `dynamic_batching`): the tiny
`add` (FP32[16] add/sub) and `mlp` (512 -> 1000 -> 1000, FP32). Clients send
requests of `--batch-size` (default 1) over the v1 HTTP API; the server forms
the batches. The
ceiling is the same ONNX model run in this process with the server's session
options, at batch 1 and at the batch sizes the server can form, reported in
inferences/s. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_http_load as load  # noqa: E402
from v1_http_bench import process  # noqa: E402

from pyserver.examples import onnx_models  # noqa: E402
from pyserver.examples.store import config, tensor, write_model  # noqa: E402

MODELS = {
    "add": (lambda: onnx_models.add_sub(),
            [tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
            [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])]),
    "mlp": (lambda: onnx_models.mlp(),
            [tensor("INPUT0", "FP32", [512])], [tensor("OUTPUT0", "FP32", [1000])]),
}
MAX_BATCH = 32


def build_store(root: pathlib.Path, delay_us: int) -> dict[str, bytes]:
    onnx_bytes = {}
    for name, (build, inputs, outputs) in MODELS.items():
        onnx_bytes[name] = build()
        batching = (f"dynamic_batching {{ preferred_batch_size: [ 8, 16, {MAX_BATCH} ] "
                    f"max_queue_delay_microseconds: {delay_us} }}")
        write_model(root, f"{name}_direct", config(f"{name}_direct", MAX_BATCH, inputs, outputs),
                    {1: onnx_bytes[name]})
        write_model(root, f"{name}_batched",
                    config(f"{name}_batched", MAX_BATCH, inputs, outputs, batching),
                    {1: onnx_bytes[name]})
    return onnx_bytes


def in_process(model: bytes, batch: int, seconds: float) -> float:
    """Inferences/s of onnxruntime called directly, server session options."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.random([batch] + i.shape[1:]).astype(np.float32)
             for i in session.get_inputs()}
    for _ in range(10):
        session.run(None, feeds)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, feeds)
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--concurrency", type=int, action="append")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--delay-us", type=int, default=2000)
    p.add_argument("--processes", type=int, default=2, help="client processes")
    p.add_argument("-b", "--batch-size", type=int, default=1, help="batch size of each request")
    p.add_argument("--port", type=int, default=18800)
    args = p.parse_args()
    levels = args.concurrency or [1, 8, 32]
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-batching-"))
    onnx_bytes = build_store(work / "store", args.delay_us)
    command = [sys.executable, "-m", "pyserver", f"--model-store={work / 'store'}",
               "--http-address=127.0.0.1", f"--http-port={args.port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={args.port + 1}",
               "--metrics-address=127.0.0.1", f"--metrics-port={args.port + 2}",
               "--repository-poll-secs=0"]
    rows: dict[tuple[str, int], list[dict]] = {}
    with process(command, f"http://127.0.0.1:{args.port}/api/health/ready", work / "server.log"):
        requests = {m: load.build_request("127.0.0.1", args.port, m, args.batch_size)
                    for m in ("add_direct", "add_batched", "mlp_direct", "mlp_batched")}
        for _ in range(args.rounds):
            for c in levels:
                for model, request in requests.items():
                    r = load.measure("127.0.0.1", args.port, request, c, args.seconds,
                                     args.warmup, args.processes)
                    r["rps"] *= args.batch_size  # inferences/s
                    rows.setdefault((model, c), []).append(r)
    ceilings = {(name, b): in_process(onnx_bytes[name], b, 3.0)
                for name in MODELS for b in (1, 8, MAX_BATCH)}
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {os.cpu_count()} cpus; batch-"
          f"{args.batch_size} requests over v1 HTTP; {args.rounds} round(s) x {args.seconds:.0f} s; "
          f"max_queue_delay {args.delay_us} µs; {args.processes} client processes")
    print("| model | scheduling | concurrency | inferences/s | p50 µs | p99 µs | errors |")
    print("|---|---|---|---|---|---|---|")
    for model in requests:
        for c in levels:
            rs = rows[(model, c)]
            name, scheduling = model.split("_")
            print(f"| {name} | {scheduling} | {c} | {statistics.median(r['rps'] for r in rs):.0f} | "
                  f"{statistics.median(r['p50_us'] for r in rs):.0f} | "
                  f"{statistics.median(r['p99_us'] for r in rs):.0f} | "
                  f"{sum(r['errors'] for r in rs)} |")
    print()
    print("| model | onnxruntime in-process, batch | inferences/s |")
    print("|---|---|---|")
    for (name, batch), value in ceilings.items():
        print(f"| {name} | {batch} | {value:.0f} |")


if __name__ == "__main__":
    main()
