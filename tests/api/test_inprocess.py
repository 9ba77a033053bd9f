"""The public in-process Python API (pyserver.Server): a real server over a
store of real ONNX models, driven with no listener at all."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import pyserver
from pyserver import InferenceRequest, InferInput, RequestedOutput, Server, ServerError
from pyserver.errors import Code
from pyserver.examples import onnx_models as m
from pyserver.examples.store import LABELS, config, tensor, write_model

pytestmark = pytest.mark.timeout(120)


def _listening_inodes() -> set[str]:
    """Socket inodes in LISTEN state (TCP) or bound (UDP) on this host."""
    inodes = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if table.startswith("udp") or fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _own_socket_inodes() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inprocess-store")
    add_sub = config("simple", 8, [tensor(f"INPUT{i}", "FP32", [16]) for i in range(2)],
                     [tensor(f"OUTPUT{i}", "FP32", [16]) for i in range(2)])
    write_model(root, "simple", add_sub, {1: m.add_sub("FP32", 16, batched=True)})
    write_model(root, "classifier", config(
        "classifier", 8, [tensor("INPUT", "FP32", [8])],
        [tensor("OUTPUT", "FP32", [10], label_filename="labels.txt")]),
        {1: m.classifier(8, 10)}, {"labels.txt": "\n".join(LABELS) + "\n"})
    write_model(root, "versioned", config(
        "versioned", 8, [tensor("INPUT0", "FP32", [16])], [tensor("OUTPUT0", "FP32", [16])],
        "version_policy: { all { } }"), {v: m.add_constant(float(v)) for v in (1, 2)})
    return root


@pytest.fixture(scope="module")
def listeners_before() -> set[str]:
    return _own_socket_inodes() & _listening_inodes()


@pytest.fixture(scope="module")
def server(store, listeners_before):
    with Server(store) as s:
        yield s


def _pair(batch: int = 1):
    a = np.arange(16 * batch, dtype=np.float32).reshape(batch, 16)
    b = np.full((batch, 16), 2.0, np.float32)
    return a, b


def test_infer_returns_the_model_outputs(server):
    a, b = _pair(3)
    response = server.infer("simple", {"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)
    assert (response.model, response.version) == ("simple", 1)


def test_infer_takes_an_inference_request_and_returns_only_the_outputs_asked_for(server):
    a, b = _pair()
    request = InferenceRequest("simple", [InferInput.from_array("INPUT0", a),
                                          InferInput("INPUT1", "FP32", (1, 16), b.tobytes())],
                               ["OUTPUT1"], id="req-7")
    response = server.infer(request)
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    assert response.id == "req-7"
    np.testing.assert_array_equal(response.output("OUTPUT1").data, a - b)


def test_infer_async_runs_on_the_callers_event_loop(server):
    a, b = _pair(2)

    async def main():
        return await asyncio.gather(*(server.infer_async("simple", {"INPUT0": a * i,
                                                                    "INPUT1": b})
                                      for i in range(5)))

    responses = asyncio.run(main())
    for i, response in enumerate(responses):
        np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a * i + b)


def test_infer_from_many_threads_at_once(server):
    def one(i: int) -> bool:
        a, b = _pair()
        out = server.infer("simple", {"INPUT0": a + i, "INPUT1": b}).as_numpy("OUTPUT0")
        return bool(np.array_equal(out, a + i + b))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(64)))


def test_a_missing_input_is_invalid_arg_and_the_server_keeps_serving(server):
    a, b = _pair()
    with pytest.raises(ServerError) as err:
        server.infer("simple", {"INPUT0": a})
    assert err.value.code == Code.INVALID_ARG and "expected 2 inputs" in err.value.message
    assert server.infer("simple", {"INPUT0": a, "INPUT1": b}).as_numpy("OUTPUT0") is not None


def test_a_wrong_dtype_is_invalid_arg(server):
    a, b = _pair()
    with pytest.raises(ServerError) as err:
        server.infer("simple", {"INPUT0": a.astype(np.float64), "INPUT1": b})
    assert err.value.code == Code.INVALID_ARG and "INPUT0" in err.value.message


def test_an_unknown_model_is_not_found(server):
    with pytest.raises(ServerError) as err:
        server.infer("nope", {"INPUT0": np.zeros((1, 16), np.float32)})
    assert err.value.code == Code.NOT_FOUND


def test_a_version_is_chosen_by_number(server):
    x = np.zeros((1, 16), np.float32)
    assert server.infer("versioned", {"INPUT0": x}, version=1).as_numpy("OUTPUT0")[0, 0] == 1.0
    assert server.infer("versioned", {"INPUT0": x}).as_numpy("OUTPUT0")[0, 0] == 2.0


def test_classification_returns_top_k_classes_with_labels(server):
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    scores = m.classifier_reference(x)
    response = server.infer("classifier", {"INPUT": x},
                             [RequestedOutput("OUTPUT", classification=3)])
    out = response.output("OUTPUT")
    assert out.datatype == "BYTES" and out.shape == (2, 3)
    for row, classes in zip(scores, out.classes):
        top = np.argsort(-row, kind="stable")[:3].tolist()
        assert [c.index for c in classes] == top
        assert [c.label for c in classes] == [LABELS[i] for i in top]
        assert classes[0].value == pytest.approx(float(row[top[0]]), rel=1e-5)
    first = out.classes[0][0]
    assert out.data[0, 0] == f"{first.value:f}:{first.index}:{first.label}".encode()


def test_model_metadata_config_and_readiness(server):
    metadata = server.model_metadata("simple")
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [
        ("INPUT0", "FP32", [-1, 16]), ("INPUT1", "FP32", [-1, 16])]
    assert server.model_config("simple").max_batch_size == 8
    assert server.model_ready("simple") and not server.model_ready("nope")
    assert server.live() and server.ready()


def test_statistics_count_successes_and_failures_by_batch_size(server):
    a, b = _pair(4)
    before = server.statistics("simple")[0].by_batch_size.get(4, {})
    server.infer("simple", {"INPUT0": a, "INPUT1": b})
    with pytest.raises(ServerError):
        server.infer("simple", {"INPUT0": a, "INPUT1": b[:, :8]})
    after = server.statistics("simple")[0].by_batch_size[4]
    assert after["success_count"] == before.get("success_count", 0) + 1
    assert after["failed_count"] == before.get("failed_count", 0) + 1


def test_index_lists_every_model_version(server):
    entries = {(e.name, e.version, e.state) for e in server.index()}
    assert {("simple", 1, "READY"), ("versioned", 1, "READY"), ("versioned", 2, "READY"),
            ("classifier", 1, "READY")} <= entries


def test_the_server_opens_no_listening_socket(server, listeners_before):
    assert _own_socket_inodes() & _listening_inodes() == listeners_before


def test_load_outside_explicit_mode_is_unavailable(server):
    with pytest.raises(ServerError) as err:
        server.load("simple")
    assert err.value.code == Code.UNAVAILABLE


def test_a_stopped_server_refuses_requests(store):
    s = Server(store).start()
    s.stop()
    with pytest.raises(ServerError) as err:
        s.infer("simple", {"INPUT0": np.zeros((1, 16), np.float32),
                           "INPUT1": np.zeros((1, 16), np.float32)})
    assert err.value.code == Code.UNAVAILABLE
    assert not s.live()


def test_a_store_that_is_not_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError):
        Server(tmp_path / "missing").start()


def test_blocking_calls_from_the_servers_own_thread_are_refused(server):
    result = {}

    async def on_server_thread():
        try:
            server.model_ready("simple")  # not blocking: fine
            server.load("simple")
        except RuntimeError as exc:
            result["error"] = str(exc)

    asyncio.run_coroutine_threadsafe(on_server_thread(), server._loop).result(10)
    assert "own thread" in result["error"]
    assert threading.current_thread() is not server._thread
    assert pyserver.Server is Server
