"""One measurement window and the stability rule of the v1 perf_client
(facts §6.2), with no sockets: the load and the server snapshots come in as
plain numbers, so the rule is testable on its own.

- A window: of the requests completed since the last collection, keep those
  whose end lies in a window of ``window_ns`` centred between the first start
  and the last end; throughput = kept × batch size / window; latency mean,
  standard deviation, and percentiles at index round(p/100 × (n − 1)).
- A load level is stable when each of the last three windows is within
  ±stability % of their average, for throughput and for the stabilising
  latency (average, or the chosen percentile). At most ``max_trials`` windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

REPORTED_PERCENTILES = (50, 90, 95, 99)
STABLE_WINDOWS = 3


@dataclass
class ServerSide:
    """Server-side averages over a window, from status statistics deltas (µs)."""
    request_count: int = 0
    request_us: float = 0.0
    queue_us: float = 0.0
    compute_us: float = 0.0

    @property
    def overhead_us(self) -> float:
        """request − queue − compute, clamped at 0 (1.x)."""
        return max(0.0, self.request_us - self.queue_us - self.compute_us)


@dataclass
class Window:
    """What one measurement window yields."""
    concurrency: int
    batch_size: int
    window_s: float
    request_count: int          # requests kept in the window
    throughput: float           # inferences/s (0 when any request failed)
    latencies_us: list[float] = field(repr=False, default_factory=list)  # sorted
    avg_latency_us: float = 0.0
    std_latency_us: float = 0.0
    percentiles_us: dict[int, float] = field(default_factory=dict)
    avg_request_us: float = 0.0  # client library timers over every completed request
    avg_send_us: float = 0.0
    avg_recv_us: float = 0.0
    errors: int = 0
    first_error: str = ""
    server: ServerSide | None = None
    client_cpu: float = 0.0      # load generator CPU, in cores (1.0 = one core busy)
    client_cpu_max: float = 0.0  # the busiest load process, in cores
    processes: int = 1

    def latency_us(self, percentile: int | None) -> float:
        """The stabilising latency: the average, or ``percentile``."""
        if percentile is None:
            return self.avg_latency_us
        return self.percentiles_us.get(percentile, 0.0)

    @property
    def response_wait_us(self) -> float:
        return max(0.0, self.avg_request_us - self.avg_send_us - self.avg_recv_us)

    @property
    def network_us(self) -> float:
        """CSV's Network+Server Send/Recv: client latency − send − receive −
        server queue − server compute, clamped at 0."""
        queue = self.server.queue_us if self.server else 0.0
        compute = self.server.compute_us if self.server else 0.0
        return max(0.0, self.avg_latency_us - self.avg_send_us - self.avg_recv_us
                   - queue - compute)


def percentile_index(p: float, n: int) -> int:
    """perf_client's index into a sorted list of n: round(p/100 × (n − 1))."""
    return int(math.floor(p / 100.0 * (n - 1) + 0.5)) if n else 0


def summarize(starts_ns: Sequence[int], ends_ns: Sequence[int], failed: int, window_ns: int,
              batch_size: int, concurrency: int, percentiles: Sequence[int] = REPORTED_PERCENTILES,
              first_error: str = "") -> Window:
    """The client side of one window from the (start, end) pairs of the requests
    that succeeded since the last collection, and the count that failed."""
    window_s = window_ns / 1e9
    if not ends_ns:
        return Window(concurrency, batch_size, window_s, 0, 0.0, errors=failed,
                      first_error=first_error,
                      percentiles_us={p: 0.0 for p in percentiles})
    first, last = min(starts_ns), max(ends_ns)
    middle = first + (last - first) // 2
    lo, hi = middle - window_ns // 2, middle + window_ns // 2
    kept = sorted((e - s) / 1000.0 for s, e in zip(starts_ns, ends_ns) if lo <= e <= hi)
    n = len(kept)
    mean = sum(kept) / n if n else 0.0
    var = (sum(x * x for x in kept) / n - mean * mean) if n else 0.0
    return Window(
        concurrency=concurrency, batch_size=batch_size, window_s=window_s, request_count=n,
        throughput=0.0 if failed else n * batch_size / window_s,
        latencies_us=kept, avg_latency_us=mean, std_latency_us=math.sqrt(max(0.0, var)),
        percentiles_us={p: kept[percentile_index(p, n)] if n else 0.0 for p in percentiles},
        errors=failed, first_error=first_error)


def within(value: float, average: float, stability: float) -> bool:
    return average * (1 - stability) <= value <= average * (1 + stability)


def is_stable(windows: Sequence[Window], stability_pct: float,
              percentile: int | None = None) -> bool:
    """The last three windows each within ±stability_pct % of their average
    for both throughput and latency. A window with an error is never stable."""
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    if any(w.errors or w.request_count == 0 for w in last):
        return False
    s = stability_pct / 100.0
    avg_tput = sum(w.throughput for w in last) / STABLE_WINDOWS
    avg_lat = sum(w.latency_us(percentile) for w in last) / STABLE_WINDOWS
    return all(within(w.throughput, avg_tput, s) and within(w.latency_us(percentile), avg_lat, s)
               for w in last)


@dataclass
class LevelResult:
    """The outcome of one load level."""
    concurrency: int
    outcome: str                   # "stable", "unstable" or "over-threshold" (early stop)
    windows: list[Window]
    meets_threshold: bool = True   # False once the latency reached the limit

    @property
    def final(self) -> Window:
        """The window reported for the level: the last one measured."""
        return self.windows[-1]

    @property
    def stable(self) -> bool:
        return self.outcome == "stable"


def unstable_message(max_trials: int, concurrency: int) -> str:
    return (f"Failed to obtain stable measurement within {max_trials} measurement windows "
            f"for concurrency {concurrency}. Please try to increase the time window "
            f"(--measurement-interval / -p).")


def profile_level(measure: Callable[[], Window], concurrency: int, stability_pct: float = 10.0,
                  max_trials: int = 10, latency_threshold_us: float = 0.0,
                  percentile: int | None = None,
                  on_window: Callable[[int, Window], None] | None = None) -> LevelResult:
    """Measures windows until the level is stable, ``max_trials`` windows
    were taken, or (with a latency threshold) none of the last three windows
    is under the threshold. A stable level whose latency is at or over the
    threshold is reported with ``meets_threshold`` False."""
    windows: list[Window] = []
    for trial in range(max(1, max_trials)):
        window = measure()
        windows.append(window)
        if on_window:
            on_window(trial + 1, window)
        if is_stable(windows, stability_pct, percentile):
            over = latency_threshold_us > 0 and window.latency_us(percentile) >= latency_threshold_us
            return LevelResult(concurrency, "stable", windows, meets_threshold=not over)
        if (latency_threshold_us > 0 and len(windows) >= STABLE_WINDOWS
                and all(w.latency_us(percentile) >= latency_threshold_us and not w.errors
                        for w in windows[-STABLE_WINDOWS:])):
            return LevelResult(concurrency, "over-threshold", windows, meets_threshold=False)
    return LevelResult(concurrency, "unstable", windows, meets_threshold=False)
