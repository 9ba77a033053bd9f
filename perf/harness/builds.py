"""This install beside a baseline install over one store: both servers up at once, one target
per request and install, and the rows that set them side by side with their ratios."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Hashable, Iterator, Mapping, Sequence

from .load import v1_request
from .processes import THIS_BUILD, Build, PyServer, pyserver
from .rounds import Target

FIGURES = ("rps", "p50_us", "p99_us", "server_cpu_us")


@contextlib.contextmanager
def this_and_baseline(store: Path, work: Path,
                      baseline: Build | None) -> Iterator[dict[str, PyServer]]:
    """{"this": server[, "baseline": server]} over ``store``."""
    builds = {"this": THIS_BUILD, **({"baseline": baseline} if baseline else {})}
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(pyserver(store, work, name, build))
               for name, build in builds.items()}


def targets_per_build(servers: Mapping[str, PyServer], requests: Mapping[Hashable, tuple[str, int]],
                      processes: int = 1) -> dict[tuple[Hashable, str], Target]:
    """A target per (request key, install); ``requests`` maps a key to (model, batch size)."""
    targets = {}
    for key, (model, batch) in requests.items():
        request = v1_request("http", servers["this"].http_port, model, batch)
        for name, server in servers.items():
            targets[(key, name)] = Target(f"{model} b{batch} {name}", server.http_port, request,
                                          server.pid, processes=processes)
    return targets


def side_by_side(targets: Mapping[tuple[Hashable, str], Target], keys: Sequence[Hashable],
                 levels: Sequence[int], key_cells: Callable[[Hashable], list[object]],
                 labels: Mapping[str, str], figures: Sequence[str] = FIGURES,
                 ratios: Sequence[str] = ("rps", "server_cpu_us")) -> list[list[object]]:
    """Rows of ``key_cells(key)``, install label, concurrency, the medians of ``figures`` and
    errors; with a baseline, the ``ratios`` this / baseline on this install's row."""
    rows = []
    for key in keys:
        base = targets.get((key, "baseline"))
        for c in levels:
            for name, label in labels.items():
                target = targets.get((key, name))
                if target is None:
                    continue
                row = [*key_cells(key), label, c, *target.cells(c, *figures), target.errors(c)]
                if base is not None:
                    row += (target.ratios(base, c, *ratios) if name == "this"
                            else [""] * len(ratios))
                rows.append(row)
    return rows
