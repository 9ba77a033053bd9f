"""What pyserver-perf prints and writes: the v1 perf_client console layout
(facts §6.3), its CSV (§6.4), live progress on a terminal, and the latency
against throughput chart.
"""

from __future__ import annotations

import csv
import sys
from typing import IO, Sequence

from .measurement import REPORTED_PERCENTILES, LevelResult, Window

CSV_HEAD = ["Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv",
            "Server Queue", "Server Compute", "Client Recv"]


def csv_percentiles(percentile: int | None) -> list[int]:
    """p50, p90, p95, p99 and a custom --percentile, ascending."""
    return sorted(set(REPORTED_PERCENTILES) | ({percentile} if percentile else set()))


def settings_text(batch_size: int, window_ms: int, latency_limit_ms: float,
                  concurrency_limit: int, percentile: int | None, protocol: str,
                  processes: int) -> str:
    lines = ["*** Measurement Settings ***",
             f"  Batch size: {batch_size}",
             f"  Measurement window: {window_ms} msec"]
    if latency_limit_ms:
        lines.append(f"  Latency limit: {latency_limit_ms:g} msec")
    if concurrency_limit:
        lines.append(f"  Concurrency limit: {concurrency_limit} concurrent requests")
    lines.append(f"  Using asynchronous calls for inference ({protocol.upper()}, "
                 f"{processes} load process{'es' if processes > 1 else ''})")
    lines.append("  Stabilizing using " + (f"p{percentile} latency" if percentile
                                            else "average latency"))
    return "\n".join(lines) + "\n"


def level_text(window: Window, protocol: str, percentile: int | None) -> str:
    """The "Request concurrency: N" block for a level's reported window."""
    lines = [f"Request concurrency: {window.concurrency}", "  Client: ",
             f"    Request count: {window.request_count}",
             f"    Throughput: {window.throughput:.1f} infer/sec"]
    if percentile is None:
        lines.append(f"    Avg latency: {window.avg_latency_us:.0f} usec "
                     f"(standard deviation {window.std_latency_us:.0f} usec)")
    for p in csv_percentiles(percentile):
        lines.append(f"    p{p} latency: {window.percentiles_us.get(p, 0.0):.0f} usec")
    if protocol == "grpc":
        lines.append(f"    Avg gRPC time: {window.avg_request_us:.0f} usec ((un)marshal "
                     f"request/response {window.avg_send_us + window.avg_recv_us:.0f} usec + "
                     f"response wait {window.response_wait_us:.0f} usec)")
    else:
        lines.append(f"    Avg HTTP time: {window.avg_request_us:.0f} usec (send/recv "
                     f"{window.avg_send_us + window.avg_recv_us:.0f} usec + response wait "
                     f"{window.response_wait_us:.0f} usec)")
    busy = " (load generator CPU-bound: raise --processes)" if window.client_cpu_max > 0.9 else ""
    lines.append(f"    Load generator CPU: {window.client_cpu * 100:.0f}% of a core over "
                 f"{window.processes} process{'es' if window.processes > 1 else ''}{busy}")
    if window.errors:
        lines.append(f"    Failed requests: {window.errors} (first: {window.first_error})")
    server = window.server
    if server is not None:
        lines += ["  Server: ",
                  f"    Request count: {server.request_count}",
                  f"    Avg request latency: {server.request_us:.0f} usec (overhead "
                  f"{server.overhead_us:.0f} usec + queue {server.queue_us:.0f} usec + "
                  f"compute {server.compute_us:.0f} usec)"]
    return "\n".join(lines) + "\n"


def window_text(trial: int, window: Window, percentile: int | None) -> str:
    """One pass, for -v."""
    latency = (f"p{percentile} latency: {window.latency_us(percentile):.0f} usec" if percentile
               else f"Avg latency: {window.avg_latency_us:.0f} usec "
                    f"(std {window.std_latency_us:.0f} usec)")
    errors = f", {window.errors} failed" if window.errors else ""
    return f"  Pass [{trial}] throughput: {window.throughput:.1f} infer/sec. {latency}{errors}\n"


def summary_text(levels: Sequence[LevelResult], percentile: int | None) -> str:
    name = f"p{percentile}" if percentile else "Average"
    lines = [f"Inferences/Second vs. Client {name} Batch Latency"]
    for level in levels:
        w = level.final
        lines.append(f"Concurrency: {w.concurrency}, throughput: {w.throughput:.1f} infer/sec, "
                     f"latency {w.latency_us(percentile):.0f} usec")
    return "\n".join(lines) + "\n"


def write_csv(path: str, levels: Sequence[LevelResult], percentile: int | None) -> None:
    """v1 columns, one row per level, sorted by increasing inferences/second."""
    ps = csv_percentiles(percentile)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEAD + [f"p{p} latency" for p in ps])
        for level in sorted(levels, key=lambda lv: lv.final.throughput):
            w = level.final
            queue = w.server.queue_us if w.server else 0.0
            compute = w.server.compute_us if w.server else 0.0
            writer.writerow([w.concurrency, f"{w.throughput:.1f}", round(w.avg_send_us),
                             round(w.network_us), round(queue), round(compute),
                             round(w.avg_recv_us)]
                            + [round(w.percentiles_us.get(p, 0.0)) for p in ps])


class PlotUnavailable(Exception):
    pass


def check_plot_support() -> None:
    """Raises PlotUnavailable with what to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: "
            "pip install matplotlib (or pip install 'pyserver[perf]')") from None


def plot(path: str, levels: Sequence[LevelResult], title: str) -> None:
    """Latency (avg, p50, p90, p99) against throughput, a point per concurrency."""
    check_plot_support()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = [lv.final for lv in sorted(levels, key=lambda lv: lv.concurrency)]
    x = [w.throughput for w in windows]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for label, values in (("avg", [w.avg_latency_us for w in windows]),
                          ("p50", [w.percentiles_us.get(50, 0) for w in windows]),
                          ("p90", [w.percentiles_us.get(90, 0) for w in windows]),
                          ("p99", [w.percentiles_us.get(99, 0) for w in windows])):
        ax.plot(x, [v / 1000 for v in values], marker="o", label=label)
    for w in windows:
        ax.annotate(f"c={w.concurrency}", (w.throughput, w.percentiles_us.get(99, 0) / 1000),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("throughput (infer/sec)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class Progress:
    """A live status line on stderr while a window is measured (terminal only)."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.shown = False

    def update(self, concurrency: int, trial: int, max_trials: int, elapsed_s: float,
               total_s: float, rate: float, last: Window | None, percentile: int | None) -> None:
        if not self.enabled:
            return
        bar_width = 20
        filled = int(bar_width * min(1.0, elapsed_s / total_s)) if total_s else bar_width
        previous = ""
        if last is not None:
            previous = (f" | last window {last.throughput:.0f} infer/s, "
                        f"{'p%d' % percentile if percentile else 'avg'} "
                        f"{last.latency_us(percentile):.0f} us")
        line = (f"concurrency {concurrency} window {trial}/{max_trials} "
                f"[{'#' * filled}{'.' * (bar_width - filled)}] {rate:.0f} req/s{previous}")
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False
