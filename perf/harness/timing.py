"""In-process timing of one call: the median of per-call times, or the mean over a span."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def call_times_ns(call: Callable[[], object], seconds: float) -> list[int]:
    """The ns each ``call()`` took, calling it back to back for ``seconds``."""
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return samples


def median_call_us(call: Callable[[], object], seconds: float, warmup_calls: int = 50) -> float:
    """Median µs of ``call()`` over ``seconds``, after ``warmup_calls`` unmeasured calls."""
    for _ in range(warmup_calls):
        call()
    return statistics.median(call_times_ns(call, seconds)) / 1000


def mean_call_us(call: Callable[[], object], seconds: float, warmup_calls: int = 20) -> float:
    """Mean µs of ``call()`` over ``seconds`` of back-to-back calls."""
    for _ in range(warmup_calls):
        call()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        runs += 1
    return (time.perf_counter() - start) * 1e6 / runs
