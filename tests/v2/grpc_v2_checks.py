"""Checks of inference.GRPCInferenceService with the real tritonclient.grpc
(and tritonclient.grpc.aio), run in a process of their own: tritonclient's
generated modules register "grpc_service.proto" and "model_config.proto" in
protobuf's default pool, the same file names as pyserver's v1 protos that
the test process (conftest) imports, and one process cannot hold both.

    python grpc_v2_checks.py HOST:PORT [explicit]

Prints one JSON object {check name: "ok" or the failure}.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import traceback

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException


def _pair(batch=2):
    a = np.arange(16 * batch, dtype=np.float32).reshape(batch, 16)
    return a, np.full((batch, 16), 3, dtype=np.float32)


def _inputs(a, b, dtype="FP32", module=grpcclient):
    i0 = module.InferInput("INPUT0", list(a.shape), dtype)
    i0.set_data_from_numpy(a)
    i1 = module.InferInput("INPUT1", list(b.shape), dtype)
    i1.set_data_from_numpy(b)
    return [i0, i1]


def _raises(status: str, call, *fragments: str) -> None:
    try:
        call()
    except InferenceServerException as exc:
        assert exc.status() == status, f"status {exc.status()} ({exc.message()}), want {status}"
        for fragment in fragments:
            assert fragment in exc.message(), exc.message()
        return
    raise AssertionError(f"no error, expected {status}")


def check_health(c):
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("simple") and c.is_model_ready("simple", "1")
    assert not c.is_model_ready("simple", "9") and not c.is_model_ready("no_such_model")


def check_metadata(c):
    meta = c.get_server_metadata(as_json=True)
    assert meta["name"] == "pyserver" and "statistics" in meta["extensions"]
    model = c.get_model_metadata("simple", as_json=True)
    assert model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": ["-1", "16"]}
    _raises("StatusCode.NOT_FOUND", lambda: c.get_model_metadata("no_such_model"))


def check_config(c):
    config = c.get_model_config("simple").config
    assert config.name == "simple" and config.max_batch_size == 8
    assert list(config.input[0].dims) == [16] and config.input[0].data_type == 11  # TYPE_FP32


def check_infer(c):
    a, b = _pair()
    result = c.infer("simple", _inputs(a, b), request_id="g-1",
                     outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0") is None
    response = result.get_response()
    assert response.id == "g-1" and response.model_version == "1"
    both = c.infer("simple", _inputs(a, b), model_version="1")
    np.testing.assert_array_equal(both.as_numpy("OUTPUT0"), a + b)
    nobatch = c.infer("simple_nobatch", _inputs(a[0], b[0]))
    np.testing.assert_array_equal(nobatch.as_numpy("OUTPUT0"), a[0] + b[0])


def check_classification(c):
    x = grpcclient.InferInput("INPUT", [1, 8], "FP32")
    x.set_data_from_numpy(np.arange(8, dtype=np.float32).reshape(1, 8))
    out = c.infer("classifier", [x], outputs=[
        grpcclient.InferRequestedOutput("OUTPUT", class_count=2)]).as_numpy("OUTPUT")
    assert out.shape == (1, 2) and out[0][0].decode().count(":") == 2, out


def check_infer_errors(c):
    a, b = _pair()
    _raises("StatusCode.NOT_FOUND", lambda: c.infer("no_such_model", _inputs(a, b)))
    ai, bi = a.astype(np.int32), b.astype(np.int32)
    _raises("StatusCode.INVALID_ARGUMENT", lambda: c.infer("simple", _inputs(ai, bi, "INT32")),
            "FP32")
    short = np.zeros((1, 15), np.float32)
    _raises("StatusCode.INVALID_ARGUMENT", lambda: c.infer("simple", _inputs(short, short)),
            "shape")
    _raises("StatusCode.INVALID_ARGUMENT", lambda: c.infer(
        "simple", _inputs(a, b), outputs=[grpcclient.InferRequestedOutput("NOPE")]), "NOPE")
    assert c.is_server_ready()


def check_stream(c):
    results = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    a, b = _pair()
    c.async_stream_infer("simple", _inputs(a, b), request_id="s1")
    c.async_stream_infer("no_such_model", _inputs(a, b), request_id="s2")
    c.async_stream_infer("simple", _inputs(b, a), request_id="s3")
    got = [results.get(timeout=10) for _ in range(3)]
    c.stop_stream()
    assert got[0][1] is None and got[0][0].get_response().id == "s1"
    np.testing.assert_array_equal(got[0][0].as_numpy("OUTPUT0"), a + b)
    assert got[1][1] is not None and "no_such_model" in got[1][1].message()
    np.testing.assert_array_equal(got[2][0].as_numpy("OUTPUT1"), b - a)
    # many in flight at once: answered in request order
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    for i in range(40):
        c.async_stream_infer("simple", _inputs(a * i, b), request_id=f"n{i}")
    got = [results.get(timeout=20) for _ in range(40)]
    c.stop_stream()
    assert [r.get_response().id for r, _ in got] == [f"n{i}" for i in range(40)]
    np.testing.assert_array_equal(got[39][0].as_numpy("OUTPUT0"), a * 39 + b)


def check_statistics(c):
    stats = c.get_inference_statistics("simple").model_stats
    assert len(stats) == 1 and stats[0].inference_stats.success.count >= 1
    assert stats[0].inference_stats.compute_infer.ns > 0 and stats[0].batch_stats
    names = {s.name for s in c.get_inference_statistics().model_stats}
    assert {"simple", "classifier"} <= names
    _raises("StatusCode.NOT_FOUND", lambda: c.get_inference_statistics("no_such_model"))


def check_repository(c):
    index = c.get_model_repository_index().models
    assert any(m.name == "simple" and m.state == "READY" for m in index)
    _raises("StatusCode.UNAVAILABLE", lambda: c.load_model("simple"))


def check_aio(target):
    async def run():
        c = aioclient.InferenceServerClient(target)
        try:
            assert await c.is_server_ready()
            a, b = _pair()
            result = await c.infer("simple", _inputs(a, b, module=aioclient))
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
            meta = await c.get_model_metadata("simple", as_json=True)
            assert meta["name"] == "simple"
        finally:
            await c.close()
    asyncio.run(run())


def check_explicit_control(c):
    def infer_good():
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        inp = grpcclient.InferInput("INPUT0", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(c.infer("good", [inp]).as_numpy("OUTPUT0"), x)
    infer_good()
    _raises("StatusCode.INVALID_ARGUMENT", lambda: c.load_model("no_such_model"))
    _raises("StatusCode.INVALID_ARGUMENT", lambda: c.load_model("bad_onnx"))
    assert not c.is_model_ready("bad_onnx")
    states = {m.name: m.state for m in c.get_model_repository_index().models}
    assert states["good"] == "READY" and "bad_onnx" in states
    c.unload_model("good")
    assert not c.is_model_ready("good")
    c.load_model("good")
    infer_good()


def main() -> int:
    target = sys.argv[1]
    explicit = sys.argv[2:] == ["explicit"]
    client = grpcclient.InferenceServerClient(target)
    checks = {"explicit_control": check_explicit_control} if explicit else {
        name[len("check_"):]: fn for name, fn in globals().items()
        if name.startswith("check_") and name not in ("check_aio", "check_explicit_control")}
    outcome = {}
    for name, fn in checks.items():
        try:
            fn(client)
            outcome[name] = "ok"
        except Exception:
            outcome[name] = traceback.format_exc(limit=3)
    if not explicit:
        try:
            check_aio(target)
            outcome["aio"] = "ok"
        except Exception:
            outcome["aio"] = traceback.format_exc(limit=3)
    client.close()
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
