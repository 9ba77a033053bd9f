"""Cancellation over gRPC: a call cancelled by its client, or whose deadline
passes, while its request waits in the model's queue takes the request out
of the queue (it never runs, the statistics count it); so does the end of a
stream for the stream's queued requests. v2 (grpc stubs and tritonclient)
and v1. The last test stops the server with a cancelled request behind a
running one.

Each test holds the one instance of a recording Python model
(slow_model_helpers) with a first request and checks the model's own
record of what it executed."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import ServerProcess, grpc_infer_request, grpc_stub, http_request
from pyserver.protos import v2_grpc_service_pb2 as pb
from pyserver.protos import v2_grpc_service_pb2_grpc as pb_grpc
from slow_model_helpers import SlowModel, cancellation_store, settle

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return cancellation_store(tmp_path_factory.mktemp("cancel_grpc_store"))


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    srv = ServerProcess(models[0].record.parents[1], "--exit-timeout-secs=20",
                        workdir=tmp_path_factory.mktemp("cancel_grpc"))
    yield srv
    srv.stop()


@pytest.fixture
def slow(models):
    models[0].release()
    yield models[0]
    models[0].release()


@pytest.fixture
def v2(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def v2_request(model: str, request_id: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=str(request_id))
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(SlowModel.input(request_id).tobytes())
    return request


TRITONCLIENT = Path(__file__).with_name("tritonclient_cancel_client.py")


def tritonclient_cancels(server, model: str, mode: str, *ids: int) -> list[str]:
    """Runs the tritonclient half (a child process): it sends ``ids``, lets
    them reach the queue and cancels them; returns what it reported."""
    done = subprocess.run([sys.executable, str(TRITONCLIENT), server.grpc_target, model, mode,
                           *map(str, ids)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])["errors"]


def statistics(server, model: str) -> dict:
    status, _, body = http_request(server.port, "GET", f"/v2/models/{model}/stats")
    assert status == 200, body
    stats = json.loads(body)["model_stats"][0]
    return {"fail": stats["inference_stats"]["fail"]["count"],
            "success": stats["inference_stats"]["success"]["count"],
            "executions": stats["execution_count"]}


def deltas(before: dict, after: dict) -> dict:
    return {key: after[key] - before[key] for key in before}


def output_of(response: pb.ModelInferResponse) -> int:
    return int(np.frombuffer(response.raw_output_contents[0], np.float32)[0])


# -- v2 -----------------------------------------------------------------------------

def test_v2_call_cancelled_while_queued_never_runs(server, slow, v2):
    before = statistics(server, slow.name)
    slow.hold()
    first = v2.ModelInfer.future(v2_request(slow.name, 101), timeout=60)
    slow.wait_running(101)
    doomed = v2.ModelInfer.future(v2_request(slow.name, 102), timeout=60)
    settle()
    assert doomed.cancel()
    third = v2.ModelInfer.future(v2_request(slow.name, 103), timeout=60)
    settle()
    slow.release()
    assert output_of(first.result()) == 101 and output_of(third.result()) == 103
    assert 102 not in slow.executed_ids()
    assert deltas(before, statistics(server, slow.name)) == \
        {"fail": 1, "success": 2, "executions": 2}


def test_v2_call_whose_deadline_passes_while_queued_never_runs(server, slow, v2):
    slow.hold()
    first = v2.ModelInfer.future(v2_request(slow.name, 201), timeout=60)
    slow.wait_running(201)
    with pytest.raises(grpc.RpcError) as failure:
        v2.ModelInfer(v2_request(slow.name, 202), timeout=0.5)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    settle()
    slow.release()
    assert output_of(first.result()) == 201
    assert output_of(v2.ModelInfer(v2_request(slow.name, 203), timeout=30)) == 203
    assert 202 not in slow.executed_ids()


@pytest.mark.parametrize("mode", ["async_infer", "aio"])
def test_tritonclient_call_cancelled_while_queued_never_runs(server, slow, v2, mode):
    base = 300 if mode == "async_infer" else 350
    before = statistics(server, slow.name)
    slow.hold()
    first = v2.ModelInfer.future(v2_request(slow.name, base + 1), timeout=60)
    slow.wait_running(base + 1)
    errors = tritonclient_cancels(server, slow.name, mode, base + 2, base + 3)
    assert len(errors) == 2
    assert all("cancel" in error.lower() for error in errors), errors
    slow.release()
    assert output_of(first.result()) == base + 1
    assert not {base + 2, base + 3} & set(slow.executed_ids())
    assert deltas(before, statistics(server, slow.name)) == \
        {"fail": 2, "success": 1, "executions": 1}


def test_tritonclient_stream_stopped_with_cancel_drops_its_queued_requests(server, slow, v2):
    before = statistics(server, slow.name)
    slow.hold()
    first = v2.ModelInfer.future(v2_request(slow.name, 401), timeout=60)
    slow.wait_running(401)
    tritonclient_cancels(server, slow.name, "stream", 402, 403)
    slow.release()
    assert output_of(first.result()) == 401
    assert not {402, 403} & set(slow.executed_ids())
    assert deltas(before, statistics(server, slow.name)) == \
        {"fail": 2, "success": 1, "executions": 1}


# -- v1 -----------------------------------------------------------------------------

def v1_request(model: str, request_id: int):
    return grpc_infer_request(model, 1, {"INPUT0": SlowModel.input(request_id)},
                              ["OUTPUT0"], request_id=request_id)


def test_v1_call_cancelled_while_queued_never_runs(server, slow):
    channel, stub = grpc_stub(server.grpc_target)
    try:
        slow.hold()
        first = stub.Infer.future(v1_request(slow.name, 501), timeout=60)
        slow.wait_running(501)
        doomed = stub.Infer.future(v1_request(slow.name, 502), timeout=60)
        settle()
        assert doomed.cancel()
        settle()
        slow.release()
        assert first.result().request_status.code == 1  # SUCCESS
        assert stub.Infer(v1_request(slow.name, 503), timeout=30).request_status.code == 1
    finally:
        channel.close()
    executed = slow.executed_ids()
    assert 502 not in executed and executed[-2:] == [501, 503]


def test_v1_stream_cancelled_drops_its_queued_requests(server, slow):
    channel, stub = grpc_stub(server.grpc_target)
    outgoing: queue.Queue = queue.Queue()

    def requests():
        while (item := outgoing.get()) is not None:
            yield item

    try:
        slow.hold()
        first = stub.Infer.future(v1_request(slow.name, 601), timeout=60)
        slow.wait_running(601)
        stream = stub.StreamInfer(requests(), timeout=60)
        outgoing.put(v1_request(slow.name, 602))
        outgoing.put(v1_request(slow.name, 603))
        settle()
        stream.cancel()
        outgoing.put(None)
        settle()
        slow.release()
        assert first.result().request_status.code == 1
    finally:
        channel.close()
    assert not {602, 603} & set(slow.executed_ids())


# -- shutdown (last: it stops the server) ---------------------------------------------

def test_server_drains_and_exits_cleanly_with_a_cancelled_request_in_its_queue(server, slow, v2):
    slow.hold()
    first = v2.ModelInfer.future(v2_request(slow.name, 701), timeout=60)
    slow.wait_running(701)
    doomed = v2.ModelInfer.future(v2_request(slow.name, 702), timeout=60)
    settle()
    assert doomed.cancel()
    settle()
    server.signal(signal.SIGTERM)
    settle()
    slow.release()
    assert output_of(first.result()) == 701
    assert server.wait(30) == 0, server.log_text()[-3000:]
    assert 702 not in slow.executed_ids()
    assert "abandon" not in server.log_text().lower()
