"""What metrics cost the v1 HTTP path (on, scraped every second, against off), and v1 gRPC.

Two servers over the example store, identical but for ``--allow-metrics=false`` on one;
the metrics-on server is scraped every ``--scrape-interval`` seconds during its rounds
(far more often than a Prometheus would). gRPC ``Infer`` (unary) and ``StreamInfer`` (one
stream per concurrent request) are measured on the metrics-on server, from
``--grpc-processes`` client processes. Alternating rounds, medians; server CPU is the
server process's CPU time per request over the level.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Iterator

from pyserver.examples.store import build_example_store

from ..harness.load import v1_request
from ..harness.options import add_levels, add_model, add_rounds
from ..harness.processes import NO_REPOSITORY_POLLING, pyserver
from ..harness.report import heading, table
from ..harness.rounds import Target, run_rounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    add_levels(parser, [1, 8])
    add_rounds(parser, rounds=3, seconds=6.0, warmup=2.0)
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--skip-grpc", action="store_true", help="measure the HTTP pair only")
    parser.add_argument("--grpc-processes", type=int, default=1,
                        help="gRPC client processes (one grpc.aio client tops out near 1.5k/s)")


class Scraper:
    """Scrapes the metrics endpoint every ``interval`` seconds inside ``scraping()``."""

    def __init__(self, url: str, interval: float) -> None:
        self.url, self.interval, self.count = url, interval, 0

    @contextlib.contextmanager
    def scraping(self) -> Iterator[None]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.interval):
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    answer.read()
                self.count += 1

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="perf-metrics-grpc-"))
    store = build_example_store(work / "store")
    with pyserver(store, work, "metrics_on") as on, \
            pyserver(store, work, "metrics_off",
                     flags=[*NO_REPOSITORY_POLLING, "--allow-metrics=false"]) as off:
        scraper = Scraper(f"http://127.0.0.1:{on.metrics_port}/metrics", args.scrape_interval)
        http = v1_request("http", on.http_port, args.model, args.batch_size)
        http_targets = [Target("HTTP, metrics on", on.http_port, http, on.pid,
                               during=scraper.scraping),
                        Target("HTTP, metrics off", off.http_port, http, off.pid)]
        grpc_targets = [] if args.skip_grpc else [
            Target(label, on.grpc_port, v1_request(protocol, on.grpc_port, args.model,
                                                   args.batch_size),
                   on.pid, protocol, args.grpc_processes)
            for label, protocol in (("gRPC Infer", "grpc"), ("gRPC StreamInfer", "grpc-stream"))]
        run_rounds(http_targets + grpc_targets, args.concurrency, args.rounds, args.seconds,
                   args.warmup)
    print(heading(f"model {args.model} batch {args.batch_size}; {args.rounds} rounds x "
                  f"{args.seconds:g} s; medians; {scraper.count} scrapes during the metrics-on "
                  f"rounds; {args.grpc_processes} gRPC client process(es)"))
    figures = ("rps", "p50_us", "p99_us", "server_cpu_us")
    headers = ["concurrency", "req/s", "p50 µs", "p99 µs", "server CPU µs/req", "errors"]
    metrics_off = http_targets[1]
    print(table(["server", *headers, "req/s vs off", "CPU/req vs off"],
                [[t.label, c, *t.cells(c, *figures), t.errors(c),
                  *t.ratios(metrics_off, c, "rps", "server_cpu_us")]
                 for c in args.concurrency for t in http_targets]))
    if grpc_targets:
        print()
        print(table(["transport", *headers], [[t.label, c, *t.cells(c, *figures), t.errors(c)]
                                             for c in args.concurrency for t in grpc_targets]))
    return 0
