"""Two pyserver builds side by side on the v1 HTTP infer path: the server
CPU per request (user + system of the whole process) and req/s of each,
in alternating rounds of one run, medians and the ratio B / A.

    python perf/v1_http_ab.py --a-python /tmp/base/.venv/bin/python \\
        --rounds 5 --seconds 5 -c 1 -c 8 [--model simple]

A is the build under ``--a-python`` (e.g. a worktree of the previous
commit with its own venv), B the one running this script. Both use the
default parser (httptools) over the same example store; the servers start
on loopback and stop at the end.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_http_load as load  # noqa: E402
from v1_http_bench import cpu_seconds, process  # noqa: E402

from pyserver.examples.store import build_example_store  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a-python", required=True, help="interpreter of build A")
    p.add_argument("--model", default="simple")
    p.add_argument("-b", "--batch-size", type=int, default=1)
    p.add_argument("-c", "--concurrency", type=int, action="append")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--port", type=int, default=18800)
    args = p.parse_args()
    levels = args.concurrency or [1, 8]
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-ab-"))
    store = build_example_store(work / "store")

    def server_cmd(python: str, port: int) -> list[str]:
        # run from the work folder: neither build's source tree is on sys.path
        return [python, "-m", "pyserver", f"--model-store={store}",
                "--http-address=127.0.0.1", f"--http-port={port}",
                "--grpc-address=127.0.0.1", f"--grpc-port={port + 10}",
                "--metrics-address=127.0.0.1", f"--metrics-port={port + 20}",
                "--repository-poll-secs=0"]

    ports = {"A": args.port, "B": args.port + 1}
    pythons = {"A": args.a_python, "B": sys.executable}
    results: dict[tuple[str, int], list[dict]] = {}
    with process(server_cmd(pythons["A"], ports["A"]),
                 f"http://127.0.0.1:{ports['A']}/api/health/ready", work / "a.log") as a, \
            process(server_cmd(pythons["B"], ports["B"]),
                    f"http://127.0.0.1:{ports['B']}/api/health/ready", work / "b.log") as b:
        pids = {"A": a.pid, "B": b.pid}
        request = load.build_request("127.0.0.1", ports["B"], args.model, args.batch_size)
        for round_index in range(args.rounds):
            order = ("A", "B") if round_index % 2 == 0 else ("B", "A")
            for c in levels:
                for name in order:
                    cpu0 = cpu_seconds(pids[name])
                    r = load.measure("127.0.0.1", ports[name], request, c, args.seconds,
                                     args.warmup, 1)
                    r["cpu_us"] = (cpu_seconds(pids[name]) - cpu0) / max(
                        1, r["rps"] * (args.seconds + args.warmup)) * 1e6
                    results.setdefault((name, c), []).append(r)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {os.cpu_count()} cpus, "
          f"python {platform.python_version()}; model {args.model} batch {args.batch_size}; "
          f"{args.rounds} rounds x {args.seconds:.0f} s; medians; A = {args.a_python}")
    print("| build | concurrency | req/s | p50 µs | p99 µs | server CPU µs/req | errors |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        for name in ("A", "B"):
            rs = results[(name, c)]
            print(f"| {name} | {c} | {statistics.median(r['rps'] for r in rs):.0f} | "
                  f"{statistics.median(r['p50_us'] for r in rs):.0f} | "
                  f"{statistics.median(r['p99_us'] for r in rs):.0f} | "
                  f"{statistics.median(r['cpu_us'] for r in rs):.0f} | "
                  f"{sum(r['errors'] for r in rs)} |")
    print()
    print("| concurrency | server CPU per request B / A | req/s B / A |")
    print("|---|---|---|")
    for c in levels:
        cpu = {n: statistics.median(r["cpu_us"] for r in results[(n, c)]) for n in ("A", "B")}
        rps = {n: statistics.median(r["rps"] for r in results[(n, c)]) for n in ("A", "B")}
        print(f"| {c} | {cpu['B'] / cpu['A']:.2f} | {rps['B'] / rps['A']:.2f} |")


if __name__ == "__main__":
    main()
