"""The response cache: a hit against a miss against no cache, over v2 HTTP of a real server.

One server started with ``--cache-size`` serves each model twice, with and without
``response_cache { enable: true }``; binary tensors over one keep-alive connection, closed
loop, rounds alternating models and modes:

- ``off``: the model without the cache (plan, queue, run);
- ``hit``: the cached model, the same request every time;
- ``miss``: the cached model, a request differing in one element every time (key, lookup,
  run, copy and insert; the cache fills and evicts).

Models: ``add`` (FP32[16] + constant), ``mlp`` (512 → 1000 → 1000 FP32), ``big`` (identity
of FP32[150528], 588 KiB in and out). Medians of rounds: p50/p99 latency, requests/s, the
server process's CPU per request (every thread); then the server's own figures from the v2
statistics: cache_hit ns per hit (the lookup), cache_miss ns per miss (lookup and insertion).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from ..harness.cpu import cpu_seconds
from ..harness.processes import pyserver
from ..harness.report import heading, table
from ..harness.timing import call_times_ns

MODELS = {"add": 16, "mlp": 512, "big": 150528}
OUTPUTS = {"add": 16, "mlp": 1000, "big": 150528}
MODES = ("off", "hit", "miss")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="per round, model and mode")
    parser.add_argument("--cache-size", type=int, default=64 * 1024 * 1024)


def write_store(root: Path) -> None:
    from pyserver.examples import onnx_models
    from pyserver.examples.store import config, tensor, write_model

    onnx = {"add": onnx_models.add_constant(1.0), "mlp": onnx_models.mlp(),
            "big": onnx_models.identity("FP32", ["batch", MODELS["big"]])}
    for name, dims in MODELS.items():
        for suffix, extra in (("", ()), ("_cached", ("response_cache { enable: true }",))):
            write_model(root, name + suffix,
                        config(name + suffix, 8, [tensor("INPUT0", "FP32", [dims])],
                               [tensor("OUTPUT0", "FP32", [OUTPUTS[name]])], *extra),
                        {1: onnx[name]})


def body(x: np.ndarray) -> tuple[dict[str, str], bytes]:
    doc = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "outputs": [{"name": "OUTPUT0",
                                   "parameters": {"binary_data": True}}]}).encode()
    return {"Inference-Header-Content-Length": str(len(doc)),
            "Content-Type": "application/octet-stream"}, doc + x.tobytes()


class Client:
    """Requests one model in one mode over a keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.serial = 0

    def call(self, model: str, mode: str):
        x = np.linspace(-1, 1, MODELS[model], dtype=np.float32).reshape(1, -1)
        path = f"/v2/models/{model}{'' if mode == 'off' else '_cached'}/infer"
        fixed = body(x)

        def once() -> None:
            headers, data = fixed
            if mode == "miss":
                self.serial += 1
                x[0, 0] = self.serial
                headers, data = body(x)
            self.conn.request("POST", path, body=data, headers=headers)
            reply = self.conn.getresponse()
            reply.read()
            if reply.status != 200:
                raise RuntimeError(f"{path}: HTTP {reply.status}")

        return once

    def cache_stats(self, model: str) -> dict[str, tuple[int, int]]:
        self.conn.request("GET", f"/v2/models/{model}_cached/stats")
        stats = json.loads(self.conn.getresponse().read())["model_stats"][0]["inference_stats"]
        return {k: (stats[k]["count"], stats[k]["ns"]) for k in ("cache_hit", "cache_miss")}


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="perf-response-cache-"))
    write_store(work / "store")
    results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    flags = ["--model-control-mode=none", f"--cache-size={args.cache_size}"]
    with pyserver(work / "store", work, flags=flags) as server:
        client = Client(server.http_port)
        calls = {(m, mode): client.call(m, mode) for m in MODELS for mode in MODES}
        for call in calls.values():
            call_times_ns(call, 0.2)
        for _ in range(args.rounds):
            for key, call in calls.items():
                cpu0 = cpu_seconds(server.pid)
                times = sorted(call_times_ns(call, args.seconds))
                cpu = cpu_seconds(server.pid) - cpu0
                results.setdefault(key, []).append(
                    (times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000,
                     len(times) / args.seconds, cpu / len(times) * 1e6))
        stats = {m: client.cache_stats(m) for m in MODELS}
    print(heading(f"v2 HTTP binary, c=1; {args.rounds} rounds x {args.seconds:g} s; medians"))
    print(table(["model", "mode", "p50 µs", "p99 µs", "req/s", "server CPU µs/req"],
                [[model, mode, *(f"{statistics.median(r[i] for r in rows):.0f}"
                                 for i in range(4))]
                 for (model, mode), rows in results.items()]))
    print()
    per = {m: {k: (ns / count / 1000 if count else 0.0) for k, (count, ns) in s.items()}
           for m, s in stats.items()}
    print(table(["model", "lookup µs per hit", "lookup + insert µs per miss"],
                [[m, f"{p['cache_hit']:.1f}", f"{p['cache_miss']:.1f}"] for m, p in per.items()]))
    return 0
