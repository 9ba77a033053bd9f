"""Triton's perf_analyzer (tritonclient 2.51.0) over pyserver's v2 HTTP and gRPC APIs.

Prints throughput, client p50/p99 and perf_analyzer's server-side breakdown (from the v2
statistics) per protocol and concurrency. Without ``--url`` it serves the example store on
free loopback ports; with it, it measures a running server. perf_analyzer comes from
``python -m perf install-peers perf_analyzer`` (perf/.peers/perf_analyzer).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from ..harness.processes import pyserver
from ..harness.report import load_average, table
from .install_peers import perf_analyzer

FIELDS = {
    "throughput": r"Throughput: ([\d.]+) infer/sec",
    "p50": r"p50 latency: (\d+) usec",
    "p99": r"p99 latency: (\d+) usec",
    "server": r"Avg request latency: (\d+) usec \((.*)\)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="simple")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--window-ms", type=int, default=3000)
    parser.add_argument("--max-trials", type=int, default=5)
    parser.add_argument("--url", help="HTTP host:port of a running server")
    parser.add_argument("--grpc-url", help="gRPC host:port of a running server")


@contextlib.contextmanager
def endpoints(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """{"http": host:port, "grpc": host:port} of the server to measure."""
    if args.url:
        yield {name: url for name, url in (("http", args.url), ("grpc", args.grpc_url)) if url}
        return
    from pyserver.examples.store import build_example_store

    work = Path(tempfile.mkdtemp(prefix="perf-perf-analyzer-"))
    with pyserver(build_example_store(work / "store"), work) as server:
        yield {"http": f"127.0.0.1:{server.http_port}", "grpc": f"127.0.0.1:{server.grpc_port}"}


def measure(binary: str, env: dict[str, str], args: argparse.Namespace, url: str,
            protocol: str, concurrency: int) -> dict[str, object]:
    # -s 1000: a loaded, shared machine rarely holds perf_analyzer's default 10% stability
    command = [binary, "-m", args.model, "-u", url, "-i", protocol, "--concurrency-range",
               f"{concurrency}:{concurrency}", "-p", str(args.window_ms), "-s", "1000", "-r",
               str(args.max_trials)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out[-2000:]}")
    row: dict[str, object] = {}
    for key, pattern in FIELDS.items():
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"no '{key}' in perf_analyzer output:\n{out[-2000:]}")
        row[key] = match.groups() if key == "server" else float(match.group(1))
    return row


def run(args: argparse.Namespace) -> int:
    binary, env, reason = perf_analyzer()
    if binary is None:
        raise SystemExit(f"error: {reason}")
    print(f"load average before: {load_average()}; {os.cpu_count()} CPUs; model {args.model}")
    rows = []
    with endpoints(args) as urls:
        for protocol, url in urls.items():
            for concurrency in args.concurrency:
                row = measure(binary, env, args, url, protocol, concurrency)
                server_avg, breakdown = row["server"]
                rows.append([protocol, concurrency, f"{row['throughput']:.0f}",
                             f"{row['p50']:.0f}", f"{row['p99']:.0f}",
                             f"{server_avg} ({breakdown})"])
    print(table(["protocol", "concurrency", "infer/s", "p50 µs", "p99 µs",
                 "server avg µs (breakdown)"], rows))
    print(f"load average after: {load_average()}")
    return 0
