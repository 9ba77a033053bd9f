"""Process-wide bounds the transports share: the open-file limit, the memory
budget for request bodies in flight, and rate-limited logging of repeated
errors (so a flood of identical failures cannot flood the log).
"""

from __future__ import annotations

import logging
import resource
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyserver.workers.tally import Tally

log = logging.getLogger("pyserver")

DEFAULT_BODY_BUDGET_BYTES = 1024 * 1024 * 1024
# Descriptors kept back from the HTTP connection limit's automatic value:
# gRPC, metrics, model files, stub sockets and shared-memory files.
RESERVED_DESCRIPTORS = 256


def raise_open_file_limit() -> int:
    """Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the soft
    limit now in force. Never lowers it; an OS refusal leaves it as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def automatic_connection_limit(open_file_limit: int) -> int:
    """The HTTP connection limit when none is given: half of the descriptors
    left after the reserve (the other half stays for gRPC clients), at least 16."""
    return max(16, (open_file_limit - RESERVED_DESCRIPTORS) // 2)


class BodyBudget:
    """Bytes of request bodies held in memory at once, across every
    connection of a process, or of every front-end worker when given their
    shared ``tally`` (a pyserver.workers.tally.Tally, whose own slot this
    budget keeps equal to ``in_use``). Event-loop thread only (no locking)."""

    __slots__ = ("limit", "in_use", "refusals", "tally")

    def __init__(self, limit: int = DEFAULT_BODY_BUDGET_BYTES, tally: Tally | None = None) -> None:
        self.limit = limit
        self.in_use = 0
        self.refusals = 0
        self.tally = tally

    def try_reserve(self, size: int) -> bool:
        """Takes ``size`` bytes from the budget; False (nothing taken) when
        that would exceed the limit."""
        held = self.in_use if self.tally is None else self.tally.total()
        if held + size > self.limit:
            self.refusals += 1
            return False
        self.in_use += size
        if self.tally is not None:
            self.tally.set_mine(self.in_use)
        return True

    def release(self, size: int) -> None:
        """Gives back bytes taken by ``try_reserve``."""
        self.in_use -= size
        if self.tally is not None:
            self.tally.set_mine(self.in_use)


class RepeatedMessageFilter(logging.Filter):
    """Lets the first record of a kind through, then at most one per
    ``interval_secs``; the next one let through says how many were dropped.
    A kind is the logger name, the message as formatted (its first line)
    and the type of the exception logged: distinct messages always pass.
    Thread-safe enough for logging: a race can only let one extra record
    through."""

    def __init__(self, interval_secs: float = 10.0, max_kinds: int = 1024) -> None:
        super().__init__()
        self.interval_secs = interval_secs
        self.max_kinds = max_kinds
        self._seen: dict[tuple[str, str], list] = {}  # kind -> [last_emit_time, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format is logging's to report
            return True
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        kind = (record.name, text.partition("\n")[0][:200], exc_type)
        now = time.monotonic()
        state = self._seen.get(kind)
        if state is None:
            if len(self._seen) >= self.max_kinds:
                self._seen.clear()
            self._seen[kind] = [now, 0]
            return True
        if now - state[0] < self.interval_secs:
            state[1] += 1
            return False
        dropped, state[0], state[1] = state[1], now, 0
        if dropped:
            record.msg = f"{text} ({dropped} identical messages suppressed)"
            record.args = None
        return True


def rate_limit_repeated_logs(interval_secs: float = 10.0) -> RepeatedMessageFilter:
    """Installs one RepeatedMessageFilter on every handler of the root
    logger (call after logging is configured); returns it."""
    flt = RepeatedMessageFilter(interval_secs)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
    return flt
