"""ONNX models through the native ONNX Runtime runtime (C API, no GIL on the
instance thread) against the previous Python runtime, and against
onnxruntime called in this process, in one run with alternating rounds.

    python perf/onnx_runtime_bench.py --baseline /tmp/pyserver-prev --rounds 3 --seconds 5

``--baseline`` is a directory holding a build of the previous commit (the
Python runtime), e.g. ``pip install --no-deps --no-build-isolation --target
DIR <checkout of main before the change>``; that server runs with
``PYTHONPATH=DIR``, the other with this tree's installed package, same
interpreter, same model store. Models: ``add`` (FP32[16] add/sub, direct),
``mlp`` (512 -> 1000 -> 1000 FP32, direct) and ``mlp`` with dynamic
batching (batch-1 requests, the server forms the batches). v1 HTTP, server
CPU per request from /proc. The in-process figures use onnxruntime's Python
API with the server's session options. Loopback only; bounded in time.
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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_http_load as load  # noqa: E402
from batching_bench import in_process  # noqa: E402
from v1_http_bench import cpu_seconds, process  # noqa: E402

from pyserver.examples import onnx_models  # noqa: E402
from pyserver.examples.store import config, tensor, write_model  # noqa: E402

ADD_IO = ([tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
          [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])])
MLP_IO = ([tensor("INPUT0", "FP32", [512])], [tensor("OUTPUT0", "FP32", [1000])])
MAX_BATCH = 32


def build_store(root: pathlib.Path, delay_us: int) -> dict[str, bytes]:
    models = {"add": onnx_models.add_sub(), "mlp": onnx_models.mlp()}
    write_model(root, "add", config("add", MAX_BATCH, *ADD_IO), {1: models["add"]})
    write_model(root, "mlp", config("mlp", MAX_BATCH, *MLP_IO), {1: models["mlp"]})
    batching = (f"dynamic_batching {{ preferred_batch_size: [ 8, 16, {MAX_BATCH} ] "
                f"max_queue_delay_microseconds: {delay_us} }}")
    write_model(root, "mlp_batched", config("mlp_batched", MAX_BATCH, *MLP_IO, batching),
                {1: models["mlp"]})
    return models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=pathlib.Path, required=True,
                   help="PYTHONPATH directory with the previous build of pyserver")
    p.add_argument("-c", "--concurrency", type=int, action="append")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--delay-us", type=int, default=2000)
    p.add_argument("--processes", type=int, default=1, help="client processes")
    p.add_argument("--model", action="append", choices=["add", "mlp", "mlp_batched"],
                   help="models to measure (default: all)")
    p.add_argument("--port", type=int, default=18900)
    args = p.parse_args()
    levels = args.concurrency or [1, 8]
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-ort-bench-"))
    models = build_store(work / "store", args.delay_us)

    def command(port: int, pythonpath: str = "") -> list[str]:
        # `env` execs the interpreter, so the pid stays the server's.
        prefix = ["env", f"PYTHONPATH={pythonpath}"] if pythonpath else []
        return [*prefix, sys.executable, "-m", "pyserver", f"--model-store={work / 'store'}",
                "--http-address=127.0.0.1", f"--http-port={port}",
                "--grpc-address=127.0.0.1", f"--grpc-port={port + 10}",
                "--metrics-address=127.0.0.1", f"--metrics-port={port + 20}",
                "--repository-poll-secs=0"]

    servers = {"native (C API)": args.port, "python (previous)": args.port + 1}
    results: dict[tuple[str, str, int], list[dict]] = {}
    with process(command(args.port), f"http://127.0.0.1:{args.port}/api/health/ready",
                 work / "native.log") as native, \
            process(command(args.port + 1, str(args.baseline.resolve())),
                    f"http://127.0.0.1:{args.port + 1}/api/health/ready",
                    work / "python.log") as python:
        pids = {"native (C API)": native.pid, "python (previous)": python.pid}
        requests = {m: load.build_request("127.0.0.1", args.port, m, 1)
                    for m in (args.model or ["add", "mlp", "mlp_batched"])}
        for _ in range(args.rounds):
            for model, request in requests.items():
                for c in levels:
                    for name, port in servers.items():
                        cpu0 = cpu_seconds(pids[name])
                        r = load.measure("127.0.0.1", port, request, c, args.seconds,
                                         args.warmup, args.processes)
                        r["cpu_us"] = (cpu_seconds(pids[name]) - cpu0) / max(
                            1, r["rps"] * (args.seconds + args.warmup)) * 1e6
                        results.setdefault((model, name, c), []).append(r)
    ceilings = {(name, b): in_process(models[name], b, 2.0)
                for name in models for b in (1, 8, MAX_BATCH)}

    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {os.cpu_count()} cpus, "
          f"python {platform.python_version()}; batch-1 requests over v1 HTTP; {args.rounds} "
          f"rounds x {args.seconds:.0f} s; medians; {args.processes} client process(es)")
    print("| model | runtime | concurrency | req/s | p50 µs | p99 µs | server CPU µs/req "
          "| errors | req/s native / python | CPU native / python |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in requests:
        for c in levels:
            med = {name: {k: statistics.median(r[k] for r in results[(model, name, c)])
                          for k in ("rps", "p50_us", "p99_us", "cpu_us")} for name in servers}
            native_m, python_m = med["native (C API)"], med["python (previous)"]
            for name in servers:
                m = med[name]
                errors = sum(r["errors"] for r in results[(model, name, c)])
                ratio = (f"{native_m['rps'] / python_m['rps']:.2f} | "
                         f"{native_m['cpu_us'] / python_m['cpu_us']:.2f}"
                         if name == "native (C API)" else " | ")
                print(f"| {model} | {name} | {c} | {m['rps']:.0f} | {m['p50_us']:.0f} | "
                      f"{m['p99_us']:.0f} | {m['cpu_us']:.0f} | {errors} | {ratio} |")
    print()
    print("| model | onnxruntime in-process (Python API), batch | inferences/s |")
    print("|---|---|---|")
    for (name, batch), value in ceilings.items():
        print(f"| {name} | {batch} | {value:.0f} |")


if __name__ == "__main__":
    main()
