"""pyserver's v1 HTTP infer path, with each HTTP parser, beside the bare
asyncio + h11 echo (the card's parser ceiling), measured in alternating rounds
in one run (these machines are noisy): medians per concurrency, the server's
CPU time per request (steadier than req/s under noise) and the ratio to the
echo.

    python perf/v1_http_bench.py --rounds 3 --seconds 8 -c 1 -c 8 [--model simple]
    python perf/v1_http_bench.py --baseline-python /path/to/old/.venv/bin/python ...

With ``--baseline-python`` a fourth server runs in the same rounds: pyserver
(httptools) as installed in another environment (e.g. the previous commit's),
so a change is measured against what it replaces on the same load.

Starts the servers itself on loopback and stops them at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_http_load as load  # noqa: E402

from pyserver.examples.store import build_example_store  # noqa: E402

PERF = pathlib.Path(__file__).resolve().parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def process(command: list[str], url: str, log: pathlib.Path):
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        try:
            wait_http(url)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="simple")
    p.add_argument("-b", "--batch-size", type=int, default=1)
    p.add_argument("-c", "--concurrency", type=int, action="append")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--port", type=int, default=18700)
    p.add_argument("--baseline-python", default="",
                   help="interpreter of another pyserver install to measure beside this one")
    p.add_argument("--extra-flag", action="append", default=[],
                   help="extra pyserver flag, e.g. --extra-flag=--log-verbose=0")
    args = p.parse_args()
    levels = args.concurrency or [1, 8]
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-bench-"))
    store = build_example_store(work / "store")
    def server_cmd(parser: str, port: int, python: str = sys.executable) -> list[str]:
        return [python, "-m", "pyserver", f"--model-store={store}",
                "--http-address=127.0.0.1", f"--http-port={port}", f"--http-parser={parser}",
                "--grpc-address=127.0.0.1", f"--grpc-port={port + 10}",
                "--metrics-address=127.0.0.1", f"--metrics-port={port + 20}",
                "--repository-poll-secs=0", *args.extra_flag]

    servers = {"pyserver httptools": args.port, "pyserver h11": args.port + 1,
               "h11 echo": args.port + 2}
    echo_cmd = [sys.executable, str(PERF / "h11_echo.py"), f"--port={args.port + 2}"]
    results: dict[tuple[str, int], list[dict]] = {}
    with process(server_cmd("httptools", args.port),
                 f"http://127.0.0.1:{args.port}/api/health/ready", work / "fast.log") as fast, \
            process(server_cmd("h11", args.port + 1),
                    f"http://127.0.0.1:{args.port + 1}/api/health/ready", work / "h11.log") as ref, \
            process(echo_cmd, f"http://127.0.0.1:{args.port + 2}/", work / "echo.log") as echo, \
            contextlib.ExitStack() as stack:
        pids = {"pyserver httptools": fast.pid, "pyserver h11": ref.pid, "h11 echo": echo.pid}
        if args.baseline_python:
            base_port = args.port + 3
            base = stack.enter_context(process(
                server_cmd("httptools", base_port, args.baseline_python),
                f"http://127.0.0.1:{base_port}/api/health/ready", work / "baseline.log"))
            servers["baseline httptools"] = base_port
            pids["baseline httptools"] = base.pid
        request = load.build_request("127.0.0.1", args.port, args.model, args.batch_size)
        for _ in range(args.rounds):
            for c in levels:
                for name, port in servers.items():
                    cpu0 = cpu_seconds(pids[name])
                    r = load.measure("127.0.0.1", port, request, c, args.seconds, args.warmup, 1)
                    r["cpu_us"] = (cpu_seconds(pids[name]) - cpu0) / max(
                        1, r["rps"] * (args.seconds + args.warmup)) * 1e6
                    results.setdefault((name, c), []).append(r)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {os.cpu_count()} cpus, "
          f"python {platform.python_version()}; model {args.model} batch {args.batch_size}; "
          f"{args.rounds} rounds x {args.seconds:.0f} s; medians")
    print("| server | concurrency | req/s | p50 µs | p99 µs | server CPU µs/req | errors "
          "| req/s vs echo |")
    print("|---|---|---|---|---|---|---|---|")
    for c in levels:
        echo_rps = statistics.median(r["rps"] for r in results[("h11 echo", c)])
        for name in servers:
            rs = results[(name, c)]
            rps = statistics.median(r["rps"] for r in rs)
            print(f"| {name} | {c} | {rps:.0f} | {statistics.median(r['p50_us'] for r in rs):.0f} | "
                  f"{statistics.median(r['p99_us'] for r in rs):.0f} | "
                  f"{statistics.median(r['cpu_us'] for r in rs):.0f} | "
                  f"{sum(r['errors'] for r in rs)} | {rps / echo_rps:.2f} |")
    if args.baseline_python:
        print()
        print("| concurrency | server CPU µs/req, baseline | this install | change |")
        print("|---|---|---|---|")
        for c in levels:
            old = statistics.median(r["cpu_us"] for r in results[("baseline httptools", c)])
            new = statistics.median(r["cpu_us"] for r in results[("pyserver httptools", c)])
            print(f"| {c} | {old:.0f} | {new:.0f} | {(new - old) / old * 100:+.0f}% |")


if __name__ == "__main__":
    main()
