"""CPU time of a server process from /proc (Linux): every thread of it, in ns resolution,
and with ``tree`` every process below it as well (a server with worker processes)."""

from __future__ import annotations

import os
from pathlib import Path


def _threads_ns(pid: int) -> int:
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def _with_descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """User + system CPU seconds of ``pid`` so far (its live threads; with ``tree``, those of
    its live descendants too)."""
    pids = _with_descendants(pid) if tree else [pid]
    return sum(_threads_ns(p) for p in pids) / 1e9
