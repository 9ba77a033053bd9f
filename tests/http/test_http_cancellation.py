"""Cancellation over HTTP: a request whose connection is closed (FIN) or reset
while it waits in its model's queue is taken out of the queue and never executed; requests
pipelined behind it on that connection never run either; the statistics and
metrics count it; other clients are served; the queue place is freed.

Each test holds the one instance of a recording Python model
(slow_model_helpers) with a first request, queues more behind it, drops a
connection, then lets the model go and checks the model's own record of what
it executed. tests/run.py runs this module with both HTTP parsers."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import urllib.request

import pytest

from conftest import HOST, ServerProcess, http_request, request_header
from slow_model_helpers import SlowModel, cancellation_store, settle

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return cancellation_store(tmp_path_factory.mktemp("cancel_http_store"))


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    srv = ServerProcess(models[0].record.parents[1],
                        workdir=tmp_path_factory.mktemp("cancel_http"))
    yield srv
    srv.stop()


@pytest.fixture
def slow(models):
    models[0].release()
    yield models[0]
    models[0].release()


@pytest.fixture
def batched(models):
    models[1].release()
    yield models[1]
    models[1].release()


# -- clients ------------------------------------------------------------------------

def v2_body(request_id: int) -> bytes:
    return json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
                                   "data": [float(request_id)] * 4}]}).encode()


def v2_http(model: str, request_id: int) -> bytes:
    body = v2_body(request_id)
    return (b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (model.encode(), len(body), body))


def v1_http(model: str, request_id: int) -> bytes:
    body = SlowModel.input(request_id).tobytes()
    header = request_header(1, ["INPUT0"]).encode()
    return (b"POST /api/infer/%s HTTP/1.1\r\nHost: x\r\nNV-InferRequest: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (model.encode(), header, len(body), body))


def send_then_reset(port: int, data: bytes) -> None:
    """Sends ``data`` on a new connection, waits for it to reach the queue,
    then resets the connection (the client is gone)."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(data)
    settle()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def send_then_close(port: int, data: bytes) -> None:
    """Sends ``data`` on a new connection, waits for it to reach the queue,
    then closes the connection normally (a FIN: the client is gone)."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(data)
    settle()
    sock.close()


class Answer(threading.Thread):
    """One v2 HTTP request on its own connection, in a thread."""

    def __init__(self, port: int, model: str, request_id: int) -> None:
        super().__init__(daemon=True)
        self.args_ = (port, model, request_id)
        self.result = None
        self.start()

    def run(self) -> None:
        port, model, request_id = self.args_
        self.result = http_request(port, "POST", f"/v2/models/{model}/infer",
                                   {"Content-Type": "application/json"}, v2_body(request_id),
                                   timeout=60)

    def status(self) -> int:
        self.join(60)
        assert self.result is not None, "no answer"
        return self.result[0]


def statistics(server, model: str) -> dict:
    status, _, body = http_request(server.port, "GET", f"/v2/models/{model}/stats")
    assert status == 200, body
    stats = json.loads(body)["model_stats"][0]
    return {"fail": stats["inference_stats"]["fail"]["count"],
            "success": stats["inference_stats"]["success"]["count"],
            "executions": stats["execution_count"]}


def canceled_metric(server, model: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    match = re.search(rf'^nv_inference_request_failure{{[^}}]*model="{model}"[^}}]*'
                      rf'reason="CANCELED"[^}}]*}} ([\d.e+]+)$', text, re.M)
    assert match, f"no CANCELED failure sample for {model}"
    return float(match.group(1))


def deltas(before: dict, after: dict) -> dict:
    return {key: after[key] - before[key] for key in before}


# -- tests --------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_a_request_whose_connection_resets_while_queued_never_runs(server, slow, protocol):
    base = 100 if protocol == "v1" else 200
    wire = v1_http if protocol == "v1" else v2_http
    before = statistics(server, slow.name)
    slow.hold()
    first = Answer(server.port, slow.name, base + 1)
    slow.wait_running(base + 1)
    send_then_reset(server.port, wire(slow.name, base + 2))
    third = Answer(server.port, slow.name, base + 3)
    settle()
    slow.release()
    assert first.status() == 200 and third.status() == 200
    executed = slow.executed_ids()
    assert base + 2 not in executed
    assert executed.index(base + 1) < executed.index(base + 3)
    assert deltas(before, statistics(server, slow.name)) == \
        {"fail": 1, "success": 2, "executions": 2}


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_a_request_whose_client_closes_the_connection_while_queued_never_runs(server, slow,
                                                                              protocol):
    base = 700 if protocol == "v1" else 800
    wire = v1_http if protocol == "v1" else v2_http
    before = statistics(server, slow.name)
    slow.hold()
    first = Answer(server.port, slow.name, base + 1)
    slow.wait_running(base + 1)
    send_then_close(server.port, b"".join(wire(slow.name, i) for i in (base + 2, base + 3)))
    settle()
    slow.release()
    assert first.status() == 200
    assert Answer(server.port, slow.name, base + 4).status() == 200
    executed = slow.executed_ids()
    assert not {base + 2, base + 3} & set(executed)
    assert deltas(before, statistics(server, slow.name)) == \
        {"fail": 1, "success": 2, "executions": 2}


def test_requests_pipelined_behind_it_on_the_reset_connection_never_run(server, slow):
    before = statistics(server, slow.name)
    slow.hold()
    first = Answer(server.port, slow.name, 301)
    slow.wait_running(301)
    send_then_reset(server.port, b"".join(v2_http(slow.name, i) for i in (302, 303, 304)))
    settle()
    slow.release()
    assert first.status() == 200
    assert Answer(server.port, slow.name, 305).status() == 200
    executed = slow.executed_ids()
    assert not {302, 303, 304} & set(executed)
    assert 305 in executed
    # Only the first of them had reached the queue; it is the one cancelled.
    assert deltas(before, statistics(server, slow.name)) == \
        {"fail": 1, "success": 2, "executions": 2}


def test_cancelled_requests_are_counted_in_the_failure_metric_as_canceled(server, slow):
    before = canceled_metric(server, slow.name)
    slow.hold()
    first = Answer(server.port, slow.name, 401)
    slow.wait_running(401)
    send_then_reset(server.port, v2_http(slow.name, 402))
    send_then_reset(server.port, v2_http(slow.name, 403))
    settle()
    slow.release()
    assert first.status() == 200
    assert canceled_metric(server, slow.name) - before == 2
    assert not {402, 403} & set(slow.executed_ids())


def test_a_cancelled_request_frees_its_place_under_max_queue_size(server, batched):
    batched.hold()
    first = Answer(server.port, batched.name, 501)
    batched.wait_running(501)
    sock = socket.create_connection((HOST, server.port), timeout=10)
    sock.sendall(v2_http(batched.name, 502))
    queued = Answer(server.port, batched.name, 503)
    settle()
    full = Answer(server.port, batched.name, 504)  # two are queued: refused at once
    assert full.status() == 503
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    settle()
    admitted = Answer(server.port, batched.name, 505)
    settle()
    batched.release()
    assert first.status() == 200 and queued.status() == 200 and admitted.status() == 200
    executed = batched.executed_ids()
    assert 502 not in executed and 504 not in executed
    assert executed[-3:] == [501, 503, 505]


def test_a_request_already_running_when_its_client_goes_still_completes(server, slow):
    before = statistics(server, slow.name)
    slow.hold()
    send_then_reset(server.port, v2_http(slow.name, 601))
    slow.wait_running(601)
    settle()
    slow.release()
    assert Answer(server.port, slow.name, 602).status() == 200
    assert slow.executed_ids()[-2:] == [601, 602]
    assert deltas(before, statistics(server, slow.name)) == \
        {"fail": 0, "success": 2, "executions": 2}
