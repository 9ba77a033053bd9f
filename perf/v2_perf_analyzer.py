"""Drives pyserver's v2 API with the real perf_analyzer (tritonclient 2.51.0)
over HTTP and gRPC, and prints a markdown table: throughput, client p50/p99,
and perf_analyzer's server-side breakdown (from /v2 statistics).

    python perf/install_peers.py perf_analyzer   # once: perf/.peers/perf_analyzer
    python perf/v2_perf_analyzer.py [--model simple] [--concurrency 1 8] [--window-ms 3000]
    python perf/v2_perf_analyzer.py --url 127.0.0.1:8000 --grpc-url 127.0.0.1:8001  # a running server

Without --url it starts ``python -m pyserver`` over the example store
(pyserver.examples) on free ports and stops it afterwards.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PERF = pathlib.Path(__file__).resolve().parent
VENV = PERF / ".peers" / "perf_analyzer" / "venv"


def perf_analyzer() -> tuple[str, dict]:
    binary = VENV / "bin" / "perf_analyzer"
    if not binary.exists():
        sys.exit(f"no {binary}: run `python perf/install_peers.py perf_analyzer` (tritonclient"
                 f"[all]==2.51.0 + nvidia-cuda-runtime-cu12 in a venv; Debian's libb64-0d)")
    site = next((VENV / "lib").glob("python3*/site-packages"))
    cudart = site / "nvidia" / "cuda_runtime" / "lib"
    env = dict(os.environ, LD_LIBRARY_PATH=f"{cudart}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    return str(binary), env


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_server(workdir: pathlib.Path) -> tuple[subprocess.Popen, str, str]:
    from pyserver.examples.store import build_example_store
    store = build_example_store(workdir / "store")
    http, grpc, metrics = free_ports(3)
    log = open(workdir / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pyserver", f"--model-store={store}",
                             f"--http-port={http}", f"--grpc-port={grpc}",
                             f"--metrics-port={metrics}"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready").status == 200:
                return proc, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"server did not become ready; see {workdir / 'server.log'}")


_FIELDS = {
    "throughput": r"Throughput: ([\d.]+) infer/sec",
    "p50": r"p50 latency: (\d+) usec",
    "p99": r"p99 latency: (\d+) usec",
    "server": r"Avg request latency: (\d+) usec \((.*)\)",
}


def run(binary: str, env: dict, model: str, url: str, protocol: str, concurrency: int,
        window_ms: int, max_trials: int) -> dict:
    # -s 1000: a loaded, shared machine rarely holds perf_analyzer's default 10% stability
    command = [binary, "-m", model, "-u", url, "-i", protocol, "--concurrency-range",
               f"{concurrency}:{concurrency}", "-p", str(window_ms), "-s", "1000", "-r",
               str(max_trials)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out[-2000:]}")
    row = {}
    for key, pattern in _FIELDS.items():
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"no '{key}' in perf_analyzer output:\n{out[-2000:]}")
        row[key] = match.groups() if key == "server" else float(match.group(1))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="simple")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--window-ms", type=int, default=3000)
    parser.add_argument("--max-trials", type=int, default=5)
    parser.add_argument("--url", help="HTTP host:port of a running server")
    parser.add_argument("--grpc-url", help="gRPC host:port of a running server")
    args = parser.parse_args()
    binary, env = perf_analyzer()
    proc = None
    http_url, grpc_url = args.url, args.grpc_url
    if http_url is None:
        proc, http_url, grpc_url = start_server(pathlib.Path(tempfile.mkdtemp(prefix="v2pa-")))
    try:
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"{os.cpu_count()} CPUs; model {args.model}")
        print("| protocol | concurrency | infer/s | p50 µs | p99 µs | server avg µs "
              "(breakdown) |")
        print("|---|---|---|---|---|---|")
        for protocol, url in (("http", http_url), ("grpc", grpc_url)):
            if url is None:
                continue
            for concurrency in args.concurrency:
                row = run(binary, env, args.model, url, protocol, concurrency, args.window_ms,
                          args.max_trials)
                server_avg, breakdown = row["server"]
                print(f"| {protocol} | {concurrency} | {row['throughput']:.0f} | "
                      f"{row['p50']:.0f} | {row['p99']:.0f} | {server_avg} ({breakdown}) |",
                      flush=True)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
