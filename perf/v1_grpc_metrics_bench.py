"""Two questions in one run, alternating rounds (these machines are noisy),
medians per level:

1. What do metrics cost the v1 HTTP infer path? The same load on a server
   with metrics on (scraped every second, far more often than Prometheus
   would) and on one started with ``--allow-metrics=false``.
2. gRPC Infer (unary) and StreamInfer requests/s and p50/p99, on the server
   with metrics on.

    python perf/v1_grpc_metrics_bench.py --rounds 3 --seconds 6 -c 1 -c 8 [--model simple]

Starts both servers itself on loopback and stops them at the end.
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
import threading
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_grpc_load as grpc_load  # noqa: E402
import v1_http_load as http_load  # noqa: E402
from v1_http_bench import cpu_seconds, process  # noqa: E402

from pyserver.examples.store import build_example_store  # noqa: E402


@contextlib.contextmanager
def scraping(url: str, interval: float):
    """Scrapes ``url`` every ``interval`` seconds until the block ends."""
    stop = threading.Event()
    scrapes = []

    def loop() -> None:
        while not stop.wait(interval):
            with urllib.request.urlopen(url, timeout=5) as answer:
                scrapes.append(len(answer.read()))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield scrapes
    finally:
        stop.set()
        thread.join()


def server_command(store: pathlib.Path, base: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pyserver", f"--model-store={store}",
            "--http-address=127.0.0.1", f"--http-port={base}",
            "--grpc-address=127.0.0.1", f"--grpc-port={base + 1}",
            "--metrics-address=127.0.0.1", f"--metrics-port={base + 2}",
            "--repository-poll-secs=0", *extra]


def with_server_cpu(pid: int, seconds: float, measure) -> dict:
    """``measure()``'s result plus ``cpu_us``: the server's CPU time per
    request over the level (warm-up included)."""
    cpu0 = cpu_seconds(pid)
    result = measure()
    result["cpu_us"] = (cpu_seconds(pid) - cpu0) / max(1, result["rps"] * seconds) * 1e6
    return result


def _row(name: str, c: int, rs: list[dict], base: list[dict] | None = None) -> str:
    rps = statistics.median(r["rps"] for r in rs)
    cpu = statistics.median(r["cpu_us"] for r in rs)
    ratios = ""
    if base:
        ratios = (f" {rps / statistics.median(r['rps'] for r in base):.2f} | "
                  f"{cpu / statistics.median(r['cpu_us'] for r in base):.2f} |")
    return (f"| {name} | {c} | {rps:.0f} | {statistics.median(r['p50_us'] for r in rs):.0f} | "
            f"{statistics.median(r['p99_us'] for r in rs):.0f} | {cpu:.0f} | "
            f"{sum(r['errors'] for r in rs)} |{ratios}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="simple")
    p.add_argument("-b", "--batch-size", type=int, default=1)
    p.add_argument("-c", "--concurrency", type=int, action="append")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--port", type=int, default=18900, help="first of six consecutive ports")
    p.add_argument("--scrape-interval", type=float, default=1.0)
    p.add_argument("--skip-grpc", action="store_true", help="measure the HTTP pair only")
    p.add_argument("--grpc-processes", type=int, default=1,
                   help="gRPC client processes (one grpc.aio client tops out near 1.5k calls/s)")
    args = p.parse_args()
    levels = args.concurrency or [1, 8]
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-bench-"))
    store = build_example_store(work / "store")
    on, off = args.port, args.port + 3
    results: dict[tuple[str, int], list[dict]] = {}
    scrape_count = 0
    span = args.seconds + args.warmup
    with process(server_command(store, on), f"http://127.0.0.1:{on}/api/health/ready",
                 work / "metrics_on.log") as on_proc, \
            process(server_command(store, off, "--allow-metrics=false"),
                    f"http://127.0.0.1:{off}/api/health/ready",
                    work / "metrics_off.log") as off_proc:
        http_request = http_load.build_request("127.0.0.1", on, args.model, args.batch_size)
        grpc_target = f"127.0.0.1:{on + 1}"
        grpc_request = grpc_load.build_request(grpc_target, args.model, args.batch_size)
        metrics_url = f"http://127.0.0.1:{on + 2}/metrics"
        for round_number in range(args.rounds):
            for c in levels:
                # metrics on first in even rounds, off first in odd ones
                for metrics_on in (True, False) if round_number % 2 == 0 else (False, True):
                    if metrics_on:
                        with scraping(metrics_url, args.scrape_interval) as scrapes:
                            results.setdefault(("HTTP, metrics on", c), []).append(
                                with_server_cpu(on_proc.pid, span, lambda: http_load.measure(
                                    "127.0.0.1", on, http_request, c, args.seconds,
                                    args.warmup, 1)))
                        scrape_count += len(scrapes)
                    else:
                        results.setdefault(("HTTP, metrics off", c), []).append(
                            with_server_cpu(off_proc.pid, span, lambda: http_load.measure(
                                "127.0.0.1", off, http_request, c, args.seconds, args.warmup,
                                1)))
                for name, stream in () if args.skip_grpc else (("gRPC Infer", False),
                                                               ("gRPC StreamInfer", True)):
                    results.setdefault((name, c), []).append(with_server_cpu(
                        on_proc.pid, span, lambda: grpc_load.measure(
                            grpc_target, grpc_request, c, args.seconds, args.warmup,
                            args.grpc_processes, stream)))
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {os.cpu_count()} cpus, "
          f"python {platform.python_version()}; model {args.model} batch {args.batch_size}; "
          f"{args.rounds} rounds x {args.seconds:.0f} s; medians; {scrape_count} scrapes "
          f"during the metrics-on rounds; {args.grpc_processes} gRPC client process(es)")
    print("| server | concurrency | req/s | p50 µs | p99 µs | server CPU µs/req | errors "
          "| req/s vs off | CPU/req vs off |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in levels:
        off = results[("HTTP, metrics off", c)]
        for name in ("HTTP, metrics on", "HTTP, metrics off"):
            print(_row(name, c, results[(name, c)], off))
    if args.skip_grpc:
        return
    print()
    print("| transport | concurrency | req/s | p50 µs | p99 µs | server CPU µs/req | errors |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        for name in ("gRPC Infer", "gRPC StreamInfer"):
            print(_row(name, c, results[(name, c)]))


if __name__ == "__main__":
    main()
