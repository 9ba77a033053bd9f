"""Two pyserver builds side by side on the v1 HTTP infer path without the
network: ``V1HttpApi.handle`` on a stand-in request cycle over a real
InferenceServer and the real ``simple`` model, in this process. Prints the
process CPU per request (event loop and core threads together; no client
or parser shares the machine's cores with it, so it is steadier than the
HTTP figures on a busy machine), alternating builds, medians of rounds.

    python perf/v1_inprocess_ab.py --a-python /tmp/base/.venv/bin/python \\
        --rounds 4 --requests 3000 -c 1 -c 8

A is the build under ``--a-python``, B the one running this script.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HEADER = (b'batch_size: 1 input { name: "INPUT0" dims: [16] } input { name: "INPUT1" dims: [16] } '
          b'output { name: "OUTPUT0" } output { name: "OUTPUT1" }')


class _Cycle:
    """The part of http.connection.RequestCycle the v1 API uses."""

    __slots__ = ("method", "path", "query", "headers", "body", "future", "responded")

    def __init__(self, future: asyncio.Future, body: bytes) -> None:
        self.method = b"POST"
        self.path = b"/api/infer/simple"
        self.query = b"format=binary"
        self.headers = [(b"nv-inferrequest", HEADER),
                        (b"content-type", b"application/octet-stream")]
        self.body = bytearray(body)
        self.future = future
        self.responded = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def query_param(self, name: bytes) -> bytes | None:
        return b"binary" if name == b"format" else None

    def respond(self, status: int, headers, body=b"") -> None:
        self.responded = True
        self.future.set_result(status)


async def _measure(store: pathlib.Path, requests: int, concurrency: int) -> float:
    """Process CPU µs per request over ``requests`` requests."""
    import numpy as np

    from pyserver.http.v1_api import V1HttpApi
    from pyserver.server import InferenceServer, ModelControlMode, ServerOptions

    server = InferenceServer(ServerOptions(model_store=store,
                                           model_control_mode=ModelControlMode.NONE))
    loop = asyncio.get_running_loop()
    server.attach(loop)
    await loop.run_in_executor(None, server.load_models)
    server.mark_ready()
    api = V1HttpApi(server)
    body = np.zeros(32, np.float32).tobytes()

    async def worker(n: int) -> None:
        for _ in range(n):
            future = loop.create_future()
            api.handle(_Cycle(future, body))
            if await future != 200:
                raise RuntimeError("infer failed")

    await worker(200)  # warm-up
    cpu0 = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    cpu = (time.process_time() - cpu0) / requests * 1e6
    await server.shutdown()
    return cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a-python")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("-c", "--concurrency", type=int, action="append")
    p.add_argument("--child", nargs=3, metavar=("STORE", "REQUESTS", "CONCURRENCY"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        store, requests, concurrency = args.child
        print(asyncio.run(_measure(pathlib.Path(store), int(requests), int(concurrency))))
        return
    if not args.a_python:
        p.error("--a-python is required")
    from pyserver.examples.store import build_example_store

    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-inprocess-ab-"))
    store = build_example_store(work / "store")
    levels = args.concurrency or [1, 8]
    pythons = {"A": args.a_python, "B": sys.executable}
    results: dict[tuple[str, int], list[float]] = {}
    for round_index in range(args.rounds):
        order = ("A", "B") if round_index % 2 == 0 else ("B", "A")
        for c in levels:
            for name in order:
                out = subprocess.run([pythons[name], str(pathlib.Path(__file__).resolve()),
                                      "--child", str(store), str(args.requests), str(c)],
                                     cwd=work, capture_output=True, text=True, check=True)
                results.setdefault((name, c), []).append(float(out.stdout.split()[-1]))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {args.rounds} rounds x {args.requests} "
          f"requests; medians; A = {args.a_python}")
    print("| concurrency | A CPU µs/req | B CPU µs/req | B / A |")
    print("|---|---|---|---|")
    for c in levels:
        a = statistics.median(results[("A", c)])
        b = statistics.median(results[("B", c)])
        print(f"| {c} | {a:.0f} | {b:.0f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
