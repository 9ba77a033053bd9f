"""The client half of the tritonclient cancellation tests, run in a process of
its own: tritonclient's generated protos clash with pyserver's in one process
(see v2/grpc_v2_checks.py).

    python tritonclient_cancel_client.py HOST:PORT MODEL MODE ID [ID...]

Sends one request per ID to MODEL (INPUT0 filled with the ID), waits for them
to reach the server's queue, cancels them the way MODE says, and prints a
JSON object {"errors": [what each cancelled request reported]}.
MODE: "async_infer" (CallContext.cancel), "stream" (stop_stream with
cancel_requests), "aio" (cancelling the asyncio task of tritonclient.grpc.aio's
infer).
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

SETTLE_S = 0.4


def inputs(module, request_id: int) -> list:
    tensor = module.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 4), request_id, np.float32))
    return [tensor]


def async_infer(target: str, model: str, ids: list[int]) -> list[str]:
    client = grpcclient.InferenceServerClient(target)
    answers: queue.Queue = queue.Queue()
    calls = [client.async_infer(model, inputs(grpcclient, i),
                                lambda result, error: answers.put(str(error)))
             for i in ids]
    time.sleep(SETTLE_S)
    for call in calls:
        call.cancel()
    errors = [answers.get(timeout=10) for _ in ids]
    time.sleep(SETTLE_S)
    client.close()
    return errors


def stream(target: str, model: str, ids: list[int]) -> list[str]:
    client = grpcclient.InferenceServerClient(target)
    answers: queue.Queue = queue.Queue()
    client.start_stream(lambda result, error: answers.put(str(error)))
    for i in ids:
        client.async_stream_infer(model, inputs(grpcclient, i))
    time.sleep(SETTLE_S)
    client.stop_stream(cancel_requests=True)
    time.sleep(SETTLE_S)
    client.close()
    errors = []
    while not answers.empty():
        errors.append(answers.get())
    return errors


async def aio(target: str, model: str, ids: list[int]) -> list[str]:
    client = aioclient.InferenceServerClient(target)
    tasks = [asyncio.ensure_future(client.infer(model, inputs(aioclient, i))) for i in ids]
    await asyncio.sleep(SETTLE_S)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(SETTLE_S)
    await client.close()
    return [type(r).__name__ for r in results]


def main() -> None:
    target, model, mode, *ids = sys.argv[1:]
    numbers = [int(i) for i in ids]
    if mode == "aio":
        errors = asyncio.run(aio(target, model, numbers))
    else:
        errors = {"async_infer": async_infer, "stream": stream}[mode](target, model, numbers)
    print(json.dumps({"errors": errors}))


if __name__ == "__main__":
    main()
