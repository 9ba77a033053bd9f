"""Sequences through the real tritonclient.grpc, in a process of its own
(tritonclient's generated modules cannot share a process with pyserver's v1
protos; see tests/v2/grpc_v2_checks.py):

    python sequence_grpc_checks.py HOST:PORT

Runs interleaved sequences over ModelInfer from several threads and over one
ModelStreamInfer stream, checks every running sum and the INVALID_ARGUMENT of
bad sequence requests; prints one JSON object {check: "ok" or the failure}."""

from __future__ import annotations

import json
import queue
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

MODELS = ("acc_py_direct", "acc_py_oldest", "acc_onnx_direct", "acc_onnx_oldest")
STEPS = 5


def _input(value: int):
    item = grpcclient.InferInput("INPUT", [1, 1], "INT32")
    item.set_data_from_numpy(np.array([[value]], np.int32))
    return [item]


def check_threads(target: str) -> None:
    def run(job):
        model, sequence_id, seed = job
        client = grpcclient.InferenceServerClient(target)
        try:
            total, pairs = 0, []
            for step in range(STEPS):
                value = seed + step
                total += value
                result = client.infer(model, _input(value), sequence_id=sequence_id,
                                      sequence_start=step == 0, sequence_end=step == STEPS - 1)
                pairs.append((total, int(result.as_numpy("OUTPUT")[0, 0])))
            return pairs
        finally:
            client.close()

    jobs = [(model, 5000 + 10 * m + i, 100 * m + i) for m, model in enumerate(MODELS)
            for i in range(6)]
    with ThreadPoolExecutor(8) as pool:
        for job, pairs in zip(jobs, pool.map(run, jobs)):
            assert all(want == got for want, got in pairs), (job, pairs)


def check_stream(target: str) -> None:
    client = grpcclient.InferenceServerClient(target)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    expected = {}
    sums: dict = {}
    try:
        for step in range(STEPS):
            for model, sequence_id in (("acc_onnx_direct", "stream-a"), ("acc_py_oldest", 6001),
                                       ("acc_onnx_oldest", 6002), ("acc_py_direct", 6003)):
                value = 3 * step + 1
                sums[sequence_id] = (0 if step == 0 else sums[sequence_id]) + value
                tag = f"{sequence_id}/{step}"
                expected[tag] = sums[sequence_id]
                client.async_stream_infer(model, _input(value), request_id=tag,
                                          sequence_id=sequence_id, sequence_start=step == 0,
                                          sequence_end=step == STEPS - 1)
        got = {}
        for _ in expected:
            result, error = answers.get(timeout=30)
            assert error is None, error
            got[result.get_response().id] = int(result.as_numpy("OUTPUT")[0, 0])
        assert got == expected, (got, expected)
    finally:
        client.stop_stream()
        client.close()


def check_errors(target: str) -> None:
    client = grpcclient.InferenceServerClient(target)
    try:
        for sequence_id, start, fragment in (
                ("text", True, "string correlation ID 'text'"),
                (6100, False, "must specify the START flag on the first request"),
                (0, True, "must specify a non-zero or non-empty correlation ID")):
            try:
                client.infer("acc_py_direct", _input(1), sequence_id=sequence_id,
                             sequence_start=start)
            except InferenceServerException as exc:
                assert exc.status() == "StatusCode.INVALID_ARGUMENT", exc.status()
                assert fragment in exc.message(), exc.message()
            else:
                raise AssertionError(f"{sequence_id!r} was accepted")
        result = client.infer("acc_py_direct", _input(9), sequence_id=6101, sequence_start=True,
                              sequence_end=True)
        assert int(result.as_numpy("OUTPUT")[0, 0]) == 9
    finally:
        client.close()


def main() -> int:
    target = sys.argv[1]
    outcome = {}
    for name, check in (("threads", check_threads), ("stream", check_stream),
                        ("errors", check_errors)):
        try:
            check(target)
            outcome[name] = "ok"
        except Exception:  # noqa: BLE001 - reported to the test
            outcome[name] = traceback.format_exc(limit=4)
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
