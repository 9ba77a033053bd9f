"""Graceful shutdown seen from gRPC: on SIGTERM the server refuses new
calls, answers every request it accepted (unary or on a stream), ends the
streams, then exits 0; an idle open stream does not hold the exit up."""

from __future__ import annotations

import queue
import signal
import threading
import time

import numpy as np
import pytest
from conftest import GRPC_TIMEOUT_S, Code, ServerProcess, grpc_infer_request, grpc_stub
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

HIDDEN = 4096
BURST = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc_shutdown_store")
    write_model(root, "mlp",
                config("mlp", 32, [tensor("INPUT0", "FP32", [512])],
                       [tensor("OUTPUT0", "FP32", [1000])],
                       "instance_group [ { count: 2 kind: KIND_CPU } ]"),
                {1: onnx_models.mlp(hidden=HIDDEN)})
    return root


def _request(request_id: int):
    x = np.random.default_rng(request_id).standard_normal((32, 512)).astype(np.float32)
    return grpc_infer_request("mlp", 32, {"INPUT0": x}, request_id=request_id)


def test_stream_requests_in_flight_at_sigterm_are_answered(store, tmp_path):
    srv = ServerProcess(store, workdir=tmp_path)
    channel, stub = grpc_stub(srv.grpc_target)
    try:
        requests: queue.Queue = queue.Queue()
        call = stub.StreamInfer(iter(requests.get, None), timeout=GRPC_TIMEOUT_S)
        requests.put(_request(0))
        assert next(call).request_status.code == Code.SUCCESS  # the stream is up
        for i in range(1, BURST + 1):
            requests.put(_request(i))
        time.sleep(0.05)
        srv.signal(signal.SIGTERM)
        answers = [next(call) for _ in range(BURST)]
        requests.put(None)
        assert [a.meta_data.id for a in answers] == list(range(1, BURST + 1))
        # each was answered in full: SUCCESS, or refused as the server exits
        for answer in answers:
            assert answer.request_status.code in (Code.SUCCESS, Code.UNAVAILABLE)
            if answer.request_status.code == Code.SUCCESS:
                assert len(answer.raw_output[0]) == 32 * 1000 * 4
        assert answers[0].request_status.code == Code.SUCCESS
        assert srv.wait(30) == 0
    finally:
        channel.close()
        srv.kill()


def test_unary_call_in_flight_at_sigterm_is_answered(store, tmp_path):
    srv = ServerProcess(store, workdir=tmp_path)
    channel, stub = grpc_stub(srv.grpc_target)
    try:
        futures = [stub.Infer.future(_request(i), timeout=GRPC_TIMEOUT_S) for i in range(4)]
        time.sleep(0.05)
        srv.signal(signal.SIGTERM)
        for i, future in enumerate(futures):
            response = future.result(timeout=GRPC_TIMEOUT_S)
            assert response.meta_data.id == i
            assert response.request_status.code in (Code.SUCCESS, Code.UNAVAILABLE)
        assert srv.wait(30) == 0
    finally:
        channel.close()
        srv.kill()


def test_idle_open_stream_does_not_hold_the_exit(store, tmp_path):
    srv = ServerProcess(store, "--exit-timeout-secs=30", workdir=tmp_path)
    channel, stub = grpc_stub(srv.grpc_target)
    try:
        requests: queue.Queue = queue.Queue()
        call = stub.StreamInfer(iter(requests.get, None), timeout=GRPC_TIMEOUT_S)
        requests.put(_request(1))
        assert next(call).request_status.code == Code.SUCCESS
        ended = threading.Event()
        threading.Thread(target=lambda: (list(_drain(call)), ended.set()), daemon=True).start()
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait(15) == 0
        assert time.monotonic() - started < 10, "an idle stream held the exit up"
        assert ended.wait(10), "the stream did not end when the server stopped"
    finally:
        requests.put(None)
        channel.close()
        srv.kill()


def _drain(call):
    try:
        yield from call
    except Exception:  # the server ends the stream: CANCELLED or UNAVAILABLE
        return
