"""One measurement of the v1 HTTP infer path without the network, for ``python -m perf
v1-inprocess``: ``V1HttpApi.handle`` on a stand-in request cycle over a real InferenceServer
and the ``simple`` model; prints the process CPU µs per request.

Run by path by the interpreter of the install under test (it imports only pyserver):

    python perf/scenarios/v1_inprocess_worker.py STORE REQUESTS CONCURRENCY
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from pyserver.http.connection import RequestCycle

HEADER = (b'batch_size: 1 input { name: "INPUT0" dims: [16] } input { name: "INPUT1" dims: [16] } '
          b'output { name: "OUTPUT0" } output { name: "OUTPUT1" }')


class Cycle(RequestCycle):
    """A request cycle without a connection: the v1 API's answer resolves ``future``."""

    def __init__(self, future: asyncio.Future, body: bytes) -> None:
        self.method = b"POST"
        self.path = b"/api/infer/simple"
        self.query = b"format=binary"
        self.headers = [(b"nv-inferrequest", HEADER),
                        (b"content-type", b"application/octet-stream")]
        self.body = bytearray(body)
        self.future = future
        self.responded = False
        self.inflight = None

    def respond(self, status: int, headers, body=b"") -> None:
        self.responded = True
        self.future.set_result(status)


async def cpu_us_per_request(store: Path, requests: int, concurrency: int) -> float:
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
            api.handle(Cycle(future, body))
            if await future != 200:
                raise RuntimeError("infer failed")

    await worker(200)
    cpu0 = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    cpu = (time.process_time() - cpu0) / requests * 1e6
    await server.shutdown()
    return cpu


if __name__ == "__main__":
    store, requests, concurrency = sys.argv[1:4]
    print(asyncio.run(cpu_us_per_request(Path(store), int(requests), int(concurrency))))
