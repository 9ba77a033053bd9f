"""The v1 HTTP infer path without the network, this install beside a baseline install.

``V1HttpApi.handle`` on a stand-in request cycle over a real InferenceServer and the
``simple`` model, in a process of each install (perf/scenarios/v1_inprocess_worker.py run
by its interpreter): the process CPU per request, event loop and core threads together.
No client or parser shares the cores with it, so it is steadier than the HTTP figures on a
busy machine. Installs alternate, medians of rounds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ..harness.options import add_baseline, add_levels, baseline_build
from ..harness.paths import SCENARIOS
from ..harness.processes import THIS_BUILD, Build
from ..harness.report import heading, ratio, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_baseline(parser, "e.g. the previous commit's venv")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=3000, help="per round and level")
    add_levels(parser, [1, 8])


def cpu_us_per_request(build: Build, store: Path, requests: int, concurrency: int,
                       work: Path) -> float:
    out = subprocess.run([build.python, str(SCENARIOS / "v1_inprocess_worker.py"), str(store),
                          str(requests), str(concurrency)], cwd=work, env=build.env(),
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def run(args: argparse.Namespace) -> int:
    from pyserver.examples.store import build_example_store

    baseline = baseline_build(args)
    if baseline is None:
        raise SystemExit("error: give --baseline-python or --baseline-pythonpath")
    work = Path(tempfile.mkdtemp(prefix="perf-v1-inprocess-"))
    store = build_example_store(work / "store")
    builds = {"baseline": baseline, "this": THIS_BUILD}
    results: dict[tuple[str, int], list[float]] = {}
    for index in range(args.rounds):
        order = list(builds) if index % 2 == 0 else list(reversed(builds))
        for c in args.concurrency:
            for name in order:
                value = cpu_us_per_request(builds[name], store, args.requests, c, work)
                results.setdefault((name, c), []).append(value)
                print(f"round {index + 1} c={c} {name}: {value:.0f} µs/req", file=sys.stderr)
    print(heading(f"{args.rounds} rounds x {args.requests} requests; medians; baseline = "
                  f"{baseline.python} {baseline.pythonpath}".rstrip()))
    rows = []
    for c in args.concurrency:
        base, this = (statistics.median(results[(n, c)]) for n in ("baseline", "this"))
        rows.append([c, f"{base:.0f}", f"{this:.0f}", ratio(this, base)])
    print(table(["concurrency", "baseline CPU µs/req", "this CPU µs/req", "this / baseline"],
                rows))
    return 0
