"""Alternating rounds: every target measured at every level once a round, the order rotating
from round to round so that a noisy machine weighs on all of them alike; medians at the end."""

from __future__ import annotations

import contextlib
import statistics
import sys
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Sequence

from .load import LevelFigures, closed_loop
from .report import ratio


@dataclass
class Target:
    """One row of a comparison: a request sent to a server, and what each round measured."""
    label: str
    port: int
    request: bytes
    server_pid: int | None = None
    server_tree: bool = False  # the server's CPU includes its child processes' (workers)
    protocol: str = "http"
    processes: int = 1
    during: Callable[[], ContextManager[object]] | None = None
    results: dict[int, list[LevelFigures]] = field(default_factory=dict)

    def median(self, concurrency: int, figure: str) -> float:
        return statistics.median(getattr(r, figure) for r in self.results[concurrency])

    def errors(self, concurrency: int) -> int:
        return sum(r.errors for r in self.results[concurrency])

    def cells(self, concurrency: int, *figures: str) -> list[str]:
        """Medians of ``figures`` at ``concurrency``, as whole numbers."""
        return [f"{self.median(concurrency, figure):.0f}" for figure in figures]

    def ratios(self, other: "Target", concurrency: int, *figures: str) -> list[str]:
        """This target's medians ÷ ``other``'s."""
        return [ratio(self.median(concurrency, f), other.median(concurrency, f)) for f in figures]


def run_rounds(targets: Sequence[Target], levels: Sequence[int], rounds: int, seconds: float,
               warmup: float, after_round: Callable[[int], None] | None = None) -> None:
    targets = list(targets)
    for index in range(rounds):
        shift = index % len(targets)
        for concurrency in levels:
            for target in targets[shift:] + targets[:shift]:
                with target.during() if target.during else contextlib.nullcontext():
                    figures = closed_loop(target.protocol, target.port, target.request,
                                          concurrency, seconds, warmup, target.processes,
                                          target.server_pid, target.server_tree)
                target.results.setdefault(concurrency, []).append(figures)
                print(f"round {index + 1} c={concurrency} {target.label}: {figures.rps:.0f}/s, "
                      f"p50 {figures.p50_us:.0f} µs, {figures.errors} errors",
                      file=sys.stderr, flush=True)
        if after_round is not None:
            after_round(index)
