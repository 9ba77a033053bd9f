"""pyserver-perf: load a v1 inference server the way the v1 perf_client did,
and report client and server-side latency per concurrency.

    pyserver-perf -m simple                                   # concurrency 1, 5 s windows
    pyserver-perf -m mlp --concurrency-range 1:8:1 -f out.csv # a sweep, with the v1 CSV
    pyserver-perf -m mlp -d -l 5 -c 32                        # raise concurrency until 5 ms
    pyserver-perf -m simple -i grpc -u localhost:8001 --percentile 99 --plot lat.png
"""

from __future__ import annotations

import argparse
import faulthandler
import math
import os
import sys
import time
from typing import Iterator

from . import report
from .load import LoadManager, LoadSpec
from .measurement import LevelResult, Window, profile_level, summarize, unstable_message
from .target import (Endpoint, ModelInfo, PerfError, StatusClient, check_batch_size,
                     grpc_request, http_request, input_tensors, request_header, server_side)

WINDOW_FACTOR = 1.2          # perf_client sleeps 1.2 × the window, then keeps its middle
UNBOUNDED_CONCURRENCY = 1024  # where "no end" stops if the latency limit is never reached
FIRST_REQUEST_TIMEOUT_S = 30.0
WATCHDOG_S = 120.0           # past a window's length: dump every thread's stack and exit


def watchdog(seconds: float | None) -> None:
    """Arms (or with None disarms) the hang guard: a stuck step prints where
    it stuck and ends the run (exit status 1) instead of hanging a script."""
    faulthandler.cancel_dump_traceback_later()
    if seconds is not None:
        faulthandler.dump_traceback_later(seconds, exit=True)


def _range(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad range '{text}': expected start[:end[:step]]")
    if not 1 <= len(values) <= 3 or values[0] < 1 or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"bad range '{text}': expected start[:end[:step]]")
    start = values[0]
    end = values[1] if len(values) > 1 else start
    step = values[2] if len(values) > 2 else 1
    if step < 1 or (end and end < start):
        raise argparse.ArgumentTypeError(f"bad range '{text}'")
    return start, end, step


def _shape(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.rpartition(":")
    try:
        return name, [int(d) for d in dims.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape '{text}': expected name:d1,d2,...")


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"bad header '{text}': expected Name:Value")
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyserver-perf", description=__doc__.split("\n\n")[0],
        epilog="Flags follow the v1 perf_client. The load is closed loop and asynchronous: "
               "each concurrent request is a keep-alive connection (HTTP) or a task on one "
               "channel (gRPC) that sends its next request when the answer is in.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", dest="model", required=True, help="model to profile")
    p.add_argument("-x", dest="version", type=int, default=-1,
                   help="model version (default -1: the latest)")
    p.add_argument("-b", dest="batch_size", type=int, default=1, help="batch size of each request")
    p.add_argument("-u", dest="url", help="server host:port (default localhost:8000, or "
                                          "localhost:8001 with -i grpc)")
    p.add_argument("-i", dest="protocol", default="http", type=str.lower,
                   choices=["http", "grpc"], help="protocol (default http)")
    p.add_argument("--streaming", action="store_true",
                   help="gRPC only: send over StreamInfer, one stream per concurrent request")
    p.add_argument("-p", "--measurement-interval", dest="window_ms", type=int, default=5000,
                   help="measurement window in msec (default 5000)")
    p.add_argument("-s", "--stability-percentage", dest="stability", type=float, default=10.0,
                   help="allowed spread of the last 3 windows, in %% (default 10)")
    p.add_argument("-r", "--max-trials", dest="max_trials", type=int, default=10,
                   help="most windows per concurrency (default 10)")
    p.add_argument("-l", "--latency-threshold", dest="latency_ms", type=float, default=0.0,
                   help="latency limit in msec that ends a sweep (default 0: none)")
    p.add_argument("--percentile", type=int, default=None,
                   help="stabilise on and report this latency percentile instead of the average")
    p.add_argument("--concurrency-range", type=_range, default=None,
                   help="start[:end[:step]]; end 0 = until the latency limit (default 1)")
    p.add_argument("-t", dest="concurrency", type=int, default=None,
                   help="concurrency (the starting one with -d); deprecated in perf_client 1.8")
    p.add_argument("-d", dest="dynamic", action="store_true",
                   help="dynamic search: concurrency +1 per level until the latency limit (-l) "
                        "or the concurrency limit (-c)")
    p.add_argument("-c", dest="max_concurrency", type=int, default=0,
                   help="concurrency limit for -d (default 0: none)")
    p.add_argument("-f", dest="csv", help="write the CSV summary to this file")
    p.add_argument("-v", dest="verbose", action="store_true", help="print every window")
    p.add_argument("-z", dest="zero_input", action="store_true",
                   help="zero-filled inputs instead of random ones")
    p.add_argument("-H", dest="headers", type=_header, action="append", default=[],
                   help="extra HTTP header 'Name:Value' (repeatable)")
    p.add_argument("--shape", type=_shape, action="append", default=[],
                   help="name:d1,d2,... for an input with variable dims (repeatable)")
    p.add_argument("--string-length", type=int, default=128,
                   help="length of generated TYPE_STRING elements (default 128)")
    p.add_argument("-a", "--async", dest="async_mode", action="store_true",
                   help="accepted for compatibility: the load is always asynchronous")
    p.add_argument("--sync", action="store_true",
                   help="accepted for compatibility: closed loop per concurrent request, "
                        "which is what synchronous mode measured")
    p.add_argument("--max-threads", type=int, default=None,
                   help="accepted for compatibility; see --processes")
    p.add_argument("--processes", type=int, default=0,
                   help="load processes (default 0: one per 16 concurrent HTTP requests or "
                        "4 gRPC ones, at most the CPU count)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw latency against throughput per concurrency (needs matplotlib)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="live progress even when stderr is not a terminal")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no live progress line")
    return p


def concurrency_levels(args: argparse.Namespace) -> Iterator[int]:
    """The load levels in order; the caller stops early at the latency limit."""
    if args.dynamic:
        start, end, step = (args.concurrency or 1), args.max_concurrency, 1
    elif args.concurrency_range is not None:
        start, end, step = args.concurrency_range
    else:
        start = end = args.concurrency or 1
        step = 1
    limit = end or UNBOUNDED_CONCURRENCY
    value = start
    while value <= limit:
        yield value
        value += step


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.streaming and args.protocol != "grpc":
        parser.error("--streaming needs -i grpc")
    if args.window_ms <= 0:
        parser.error("-p: the measurement window must be > 0 msec")
    if args.max_trials < 1:
        parser.error("-r: at least one trial")
    if args.stability <= 0:
        parser.error("-s: the stability percentage must be > 0")
    if args.percentile is not None and not 0 < args.percentile < 100:
        parser.error("--percentile must be within (0, 100)")
    if args.dynamic and args.concurrency_range is not None:
        parser.error("-d and --concurrency-range exclude each other")
    unbounded = ((args.dynamic and not args.max_concurrency)
                 or (args.concurrency_range is not None and args.concurrency_range[1] == 0))
    if unbounded and not args.latency_ms:
        parser.error("a sweep without an end needs a latency limit (-l)")


def default_processes(protocol: str, max_concurrency: int) -> int:
    per_process = 16 if protocol == "http" else 4
    return max(1, min(os.cpu_count() or 1, math.ceil(max_concurrency / per_process)))


class Profiler:
    """Runs the load levels against one endpoint and model."""

    def __init__(self, args: argparse.Namespace, out=None) -> None:
        self.args = args
        self.out = out or sys.stdout
        self.endpoint = Endpoint.parse(args.url, args.protocol)
        self.status = StatusClient(self.endpoint, dict(args.headers))
        self.percentile = args.percentile
        self.progress = report.Progress(enabled=args.progress)

    def print(self, text: str) -> None:
        self.progress.clear()
        self.out.write(text)
        self.out.flush()

    def prepare(self) -> LoadSpec:
        args = self.args
        info = ModelInfo.from_status(self.status.status(args.model), args.model, args.version)
        check_batch_size(info.config, args.batch_size)
        inputs = input_tensors(info.config, args.batch_size, dict(args.shape), args.zero_input,
                               args.string_length)
        header = request_header(info.config, args.batch_size, inputs)
        if self.endpoint.protocol == "grpc":
            request = grpc_request(args.model, args.version, header, inputs)
        else:
            request = http_request(self.endpoint, args.model, args.version, header, inputs,
                                   dict(args.headers))
        return LoadSpec(self.endpoint.protocol, self.endpoint.host, self.endpoint.port, request,
                        args.streaming)

    def _first_request(self, load: LoadManager) -> None:
        """One request before any window, so a request the server refuses is
        reported at once rather than as an unstable measurement."""
        load.set_concurrency(1)
        deadline = time.monotonic() + FIRST_REQUEST_TIMEOUT_S
        while load.completed() == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        collected = load.collect()
        if collected.completed == 0:
            raise PerfError(collected.first_error or
                            f"no answer from {self.endpoint.address} within "
                            f"{FIRST_REQUEST_TIMEOUT_S:.0f} s")

    def _snapshot(self):
        return self.status.status(self.args.model)

    def _measure_window(self, load: LoadManager, concurrency: int, trial: int,
                        last: Window | None, state: dict) -> Window:
        args = self.args
        window_ns = args.window_ms * 1_000_000
        total_s = WINDOW_FACTOR * args.window_ms / 1000
        watchdog(total_s + WATCHDOG_S)
        begin = time.monotonic()
        count0 = load.completed()
        while True:
            elapsed = time.monotonic() - begin
            if elapsed >= total_s:
                break
            time.sleep(min(0.25, total_s - elapsed))
            elapsed = time.monotonic() - begin
            self.progress.update(concurrency, trial, args.max_trials, elapsed, total_s,
                                 (load.completed() - count0) / max(elapsed, 1e-6), last,
                                 self.percentile)
        after = self._snapshot()
        collected = load.collect()
        window = summarize(collected.starts_ns, collected.ends_ns, collected.failed, window_ns,
                           args.batch_size, concurrency,
                           report.csv_percentiles(self.percentile), collected.first_error)
        if collected.completed:
            window.avg_send_us = collected.send_ns / collected.completed / 1000
            window.avg_recv_us = collected.recv_ns / collected.completed / 1000
            window.avg_request_us = sum(e - s for s, e in zip(collected.starts_ns,
                                                               collected.ends_ns)) \
                / collected.completed / 1000
        wall = max(collected.wall_s, 1e-6)
        window.client_cpu = sum(collected.cpu_s) / wall
        window.client_cpu_max = max(collected.cpu_s) / wall
        window.processes = load.processes
        window.server = server_side(state["status"], after, args.model, args.version,
                                    args.batch_size)
        state["status"] = after
        return window

    def run_level(self, load: LoadManager, concurrency: int) -> LevelResult:
        args = self.args
        load.set_concurrency(concurrency)
        load.collect()   # requests of the previous level do not count here
        state = {"status": self._snapshot()}
        windows: list[Window] = []

        def measure() -> Window:
            window = self._measure_window(load, concurrency, len(windows) + 1,
                                          windows[-1] if windows else None, state)
            windows.append(window)
            return window

        def on_window(trial: int, window: Window) -> None:
            if args.verbose:
                self.print(report.window_text(trial, window, self.percentile))

        return profile_level(measure, concurrency, args.stability, args.max_trials,
                             args.latency_ms * 1000, self.percentile, on_window)

    def run(self) -> tuple[list[LevelResult], int]:
        """(the levels measured, exit status)."""
        args = self.args
        spec = self.prepare()
        levels = list(concurrency_levels(args)) if not (
            args.dynamic and not args.max_concurrency) else None
        top = max(levels) if levels else (os.cpu_count() or 1) * 16
        processes = args.processes or default_processes(self.endpoint.protocol, top)
        self.print(report.settings_text(args.batch_size, args.window_ms, args.latency_ms,
                                        args.max_concurrency if args.dynamic else 0,
                                        self.percentile, self.endpoint.protocol, processes))
        results: list[LevelResult] = []
        status = 0
        watchdog(WATCHDOG_S)
        with LoadManager(spec, processes) as load:
            self._first_request(load)
            for concurrency in concurrency_levels(args):
                level = self.run_level(load, concurrency)
                if level.outcome == "unstable":
                    self.print(f"\n{unstable_message(args.max_trials, concurrency)}\n")
                    if level.final.errors:
                        self.print(f"{level.final.errors} request(s) failed in the last window; "
                                   f"first: {level.final.first_error}\n")
                    status = 1
                    break
                results.append(level)
                self.print("\n" + report.level_text(level.final, self.endpoint.protocol,
                                                    self.percentile))
                if not level.meets_threshold:
                    self.print(f"Measured latency went over the set limit of "
                               f"{args.latency_ms:g} msec.\n")
                    break
            watchdog(WATCHDOG_S)   # stopping the load processes
        watchdog(None)
        self.status.close()
        if results:
            self.print("\n" + report.summary_text(results, self.percentile))
        return results, status


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        if args.plot:
            report.check_plot_support()
        profiler = Profiler(args)
        results, status = profiler.run()
        if args.csv and results:
            report.write_csv(args.csv, results, args.percentile)
        if args.plot and results:
            report.plot(args.plot, results,
                        f"{args.model} batch {args.batch_size} over {args.protocol.upper()} "
                        f"({profiler.endpoint.address})")
        return status
    except (PerfError, report.PlotUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
