"""Response cache: hit against miss against no cache, side by side, over the
v2 HTTP API of a real server process (binary tensors, one keep-alive
connection, closed loop, client and server on this machine).

Each model is served twice from one server started with --cache-size: once
with ``response_cache { enable: true }`` and once without. Modes, alternated
round by round:

- ``off``: the model without response_cache (the baseline: plan, queue, run);
- ``hit``: the cached model, the same request every time;
- ``miss``: the cached model, a request that differs in one element every
  time (key, lookup, run, copy and insert; the cache fills and evicts).

Models: ``add`` (FP32[16] + constant), ``mlp`` (512 -> 1000 -> 1000 FP32,
compute-heavier), ``big`` (identity of FP32[150528], 588 KiB in and out:
the key and copies grow with the tensors). Prints p50/p99 latency per
request, requests/s and the server process's CPU time per request (all its
threads, from /proc/<pid>/task/*/schedstat: steadier than latency on a busy
machine), medians of rounds; and the server's own figures from the v2
statistics: cache_hit ns per hit (lookup) and cache_miss ns per miss
(lookup plus insertion).

    python perf/response_cache_bench.py --rounds 3 --seconds 1

``--hash-only`` measures just the key hash in this process instead:
``_core.CacheKey`` (the core's KeyHash) against Python's ``hash()`` (SipHash)
of fresh byte strings of 64 B, 4 KiB and 588 KiB, and comparing two equal
keys (what a hit does), best of 5.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

MODELS = {"add": ("FP32", 16), "mlp": ("FP32", 512), "big": ("FP32", 150528)}
MODES = ("off", "hit", "miss")


def _store(root: Path) -> None:
    onnx = {"add": onnx_models.add_constant(1.0), "mlp": onnx_models.mlp(),
            "big": onnx_models.identity("FP32", ["batch", MODELS["big"][1]])}
    outputs = {"add": 16, "mlp": 1000, "big": MODELS["big"][1]}
    for name, (dtype, dims) in MODELS.items():
        for suffix, extra in (("", ()), ("_cached", ("response_cache { enable: true }",))):
            model = name + suffix
            write_model(root, model, config(model, 8, [tensor("INPUT0", dtype, [dims])],
                                            [tensor("OUTPUT0", dtype, [outputs[name]])],
                                            *extra), {1: onnx[name]})


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _body(x: np.ndarray) -> tuple[dict, bytes]:
    doc = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "outputs": [{"name": "OUTPUT0",
                                   "parameters": {"binary_data": True}}]}).encode()
    return {"Inference-Header-Content-Length": str(len(doc)),
            "Content-Type": "application/octet-stream"}, doc + x.tobytes()


def _cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in ns (Linux)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def _round(conn: http.client.HTTPConnection, model: str, mode: str, seconds: float,
           serial: list[int]) -> tuple[list[float], int]:
    dims = MODELS[model][1]
    x = np.linspace(-1, 1, dims, dtype=np.float32).reshape(1, dims)
    path = f"/v2/models/{model}{'' if mode == 'off' else '_cached'}/infer"
    headers, fixed = _body(x)
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        body = fixed
        if mode == "miss":
            serial[0] += 1
            x[0, 0] = serial[0]
            headers, body = _body(x)
        start = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        reply = conn.getresponse()
        reply.read()
        latencies.append(time.perf_counter() - start)
        if reply.status != 200:
            raise RuntimeError(f"{path}: HTTP {reply.status}")
    return latencies, len(latencies)


def _cache_stats(conn: http.client.HTTPConnection, model: str) -> dict:
    conn.request("GET", f"/v2/models/{model}_cached/stats")
    reply = conn.getresponse()
    stats = json.loads(reply.read())["model_stats"][0]["inference_stats"]
    return {k: (stats[k]["count"], stats[k]["ns"]) for k in ("cache_hit", "cache_miss")}


def _hash_only() -> None:
    import os

    from pyserver import _core
    print("| key bytes | CacheKey µs | hash() µs | compare equal keys µs |")
    print("|---|---|---|---|")
    for size in (64, 4096, 602112):
        data = os.urandom(size)
        count = 20000 if size < 10000 else 300
        best = [float("inf")] * 3
        for _ in range(5):
            fresh = [bytes(bytearray(data)) for _ in range(count)]
            start = time.perf_counter()
            for item in fresh:
                _core.CacheKey(item)
            keyhash = (time.perf_counter() - start) / count
            fresh = [bytes(bytearray(data)) for _ in range(count)]  # hash() caches its value
            start = time.perf_counter()
            for item in fresh:
                hash(item)
            siphash = (time.perf_counter() - start) / count
            one, other = _core.CacheKey(data), _core.CacheKey(bytes(bytearray(data)))
            start = time.perf_counter()
            for _ in range(count):
                one == other
            compare = (time.perf_counter() - start) / count
            best = [min(b, v) for b, v in zip(best, (keyhash, siphash, compare))]
        print(f"| {size} | {best[0] * 1e6:.2f} | {best[1] * 1e6:.2f} | {best[2] * 1e6:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hash-only", action="store_true",
                        help="time the key hash in this process; no server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="per round, model and mode")
    parser.add_argument("--cache-size", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args()
    if args.hash_only:
        return _hash_only()
    workdir = Path(tempfile.mkdtemp(prefix="pyserver-cache-bench-"))
    _store(workdir / "store")
    http_port, grpc_port, metrics_port = _free_ports(3)
    log = open(workdir / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "pyserver", f"--model-store={workdir / 'store'}",
         "--http-address=127.0.0.1", f"--http-port={http_port}", "--grpc-address=127.0.0.1",
         f"--grpc-port={grpc_port}", "--metrics-address=127.0.0.1",
         f"--metrics-port={metrics_port}", "--model-control-mode=none",
         f"--cache-size={args.cache_size}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        for _ in range(300):
            try:
                conn.request("GET", "/v2/health/ready")
                reply = conn.getresponse()
                reply.read()
                if reply.status == 200:
                    break
            except OSError:
                conn.close()
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not become ready")
        serial = [0]
        results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        for model in MODELS:  # warm-up: plans, sessions, the hit entry
            for mode in MODES:
                _round(conn, model, mode, 0.2, serial)
        for _ in range(args.rounds):
            for model in MODELS:
                for mode in MODES:
                    cpu = _cpu_ns(server.pid)
                    lat, count = _round(conn, model, mode, args.seconds, serial)
                    cpu = _cpu_ns(server.pid) - cpu
                    lat.sort()
                    results.setdefault((model, mode), []).append(
                        (lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6,
                         count / args.seconds, cpu / count / 1000))
        print("| model | mode | p50 µs | p99 µs | req/s | server CPU µs/req |")
        print("|---|---|---|---|---|---|")
        for (model, mode), rows in results.items():
            p50, p99, rate, cpu = (statistics.median(r[i] for r in rows) for i in range(4))
            print(f"| {model} | {mode} | {p50:.0f} | {p99:.0f} | {rate:.0f} | {cpu:.0f} |")
        print()
        print("| model | server cache_hit µs per hit | server cache_miss µs per miss |")
        print("|---|---|---|")
        for model in MODELS:
            stats = _cache_stats(conn, model)
            per = {k: (ns / count / 1000 if count else 0.0) for k, (count, ns) in stats.items()}
            print(f"| {model} | {per['cache_hit']:.1f} | {per['cache_miss']:.1f} |")
        conn.close()
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


if __name__ == "__main__":
    main()
