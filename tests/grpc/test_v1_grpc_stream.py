"""StreamInfer (facts §3.2): one response per request, in the order the
requests were read, whatever order they finish in; a client that cancels its
stream leaves the server and other streams alone."""

from __future__ import annotations

import queue
import threading

import grpc
import numpy as np
import pytest
from conftest import (GRPC_TIMEOUT_S, Code, ServerProcess, grpc_infer_request, grpc_stub)
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model
from pyserver.protos import grpc_service_pb2 as gs

RNG = np.random.default_rng(77)
HIDDEN = 2048
STREAM_METHOD = "/nvidia.inferenceserver.GRPCService/StreamInfer"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``slow``: a wide MLP on two instances (slow, so later fast requests
    finish first); ``fast``: add/sub FP32[16]."""
    root = tmp_path_factory.mktemp("stream_store")
    write_model(root, "slow",
                config("slow", 32, [tensor("INPUT0", "FP32", [512])],
                       [tensor("OUTPUT0", "FP32", [1000])],
                       "instance_group [ { count: 2 kind: KIND_CPU } ]"),
                {1: onnx_models.mlp(hidden=HIDDEN)})
    write_model(root, "fast",
                config("fast", 8, [tensor(f"INPUT{i}", "FP32", [16]) for i in range(2)],
                       [tensor(f"OUTPUT{i}", "FP32", [16]) for i in range(2)]),
                {1: onnx_models.add_sub("FP32", 16, batched=True)})
    srv = ServerProcess(root, workdir=tmp_path_factory.mktemp("stream_server"))
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code}:\n{srv.log_text()}"
    assert "Traceback" not in srv.log_text(), srv.log_text()


@pytest.fixture(scope="module")
def connection(server):
    channel, stub = grpc_stub(server.grpc_target)
    yield channel, stub
    channel.close()


def _fast(request_id: int) -> tuple[gs.InferRequest, np.ndarray]:
    a = RNG.standard_normal((1, 16)).astype(np.float32)
    b = RNG.standard_normal((1, 16)).astype(np.float32)
    return grpc_infer_request("fast", 1, {"INPUT0": a, "INPUT1": b}, ["OUTPUT0"],
                              request_id=request_id), a + b


def _slow(request_id: int) -> gs.InferRequest:
    x = RNG.standard_normal((32, 512)).astype(np.float32)
    return grpc_infer_request("slow", 32, {"INPUT0": x}, request_id=request_id)


def _check_fast(response: gs.InferResponse, expected: np.ndarray, request_id: int) -> None:
    assert response.request_status.code == Code.SUCCESS, response.request_status
    assert response.meta_data.id == request_id
    np.testing.assert_array_equal(np.frombuffer(response.raw_output[0], np.float32),
                                  expected.ravel())


def test_responses_come_in_request_order(connection):
    _, stub = connection
    requests, expected = [], {}
    for i in range(1, 41):
        if i % 5 == 1:
            requests.append(_slow(i))
        else:
            request, expected[i] = _fast(i)
            requests.append(request)
    responses = list(stub.StreamInfer(iter(requests), timeout=GRPC_TIMEOUT_S))
    assert [r.meta_data.id for r in responses] == list(range(1, 41))
    for i, response in enumerate(responses, start=1):
        if i in expected:
            _check_fast(response, expected[i], i)
        else:
            assert response.request_status.code == Code.SUCCESS
            assert len(response.raw_output[0]) == 32 * 1000 * 4


def test_failures_are_answered_in_place(connection):
    _, stub = connection
    good, expected = _fast(1)
    bad_model = grpc_infer_request("nope", 1, {"INPUT0": np.zeros((1, 16), np.float32)},
                                   request_id=2)
    bad_size, _ = _fast(3)
    bad_size.raw_input[0] = b"\0" * 8
    last, last_expected = _fast(4)
    responses = list(stub.StreamInfer(iter([_slow(0), good, bad_model, bad_size, last]),
                                      timeout=GRPC_TIMEOUT_S))
    assert [r.meta_data.id for r in responses] == [0, 1, 2, 3, 4]
    assert responses[0].request_status.code == Code.SUCCESS
    _check_fast(responses[1], expected, 1)
    assert responses[2].request_status.code == Code.NOT_FOUND
    assert responses[3].request_status.code == Code.INVALID_ARG
    assert list(responses[3].raw_output) == []
    _check_fast(responses[4], last_expected, 4)


def test_malformed_message_is_answered_in_place(connection):
    channel, _ = connection
    good, expected = _fast(8)
    stream = channel.stream_stream(STREAM_METHOD, request_serializer=None,
                                   response_deserializer=gs.InferResponse.FromString)
    responses = list(stream(iter([b"\xff\xff garbage", good.SerializeToString()]),
                            timeout=GRPC_TIMEOUT_S))
    assert len(responses) == 2
    assert responses[0].request_status.code == Code.INVALID_ARG
    assert "malformed InferRequest" in responses[0].request_status.msg
    _check_fast(responses[1], expected, 8)


def test_empty_stream_ends_cleanly(connection):
    _, stub = connection
    assert list(stub.StreamInfer(iter([]), timeout=GRPC_TIMEOUT_S)) == []


class _OpenStream:
    """A stream fed from a queue, so the test decides when requests go."""

    def __init__(self, stub) -> None:
        self.requests: queue.Queue = queue.Queue()
        self.call = stub.StreamInfer(iter(self.requests.get, None), timeout=GRPC_TIMEOUT_S)

    def send(self, request: gs.InferRequest) -> None:
        self.requests.put(request)

    def receive(self) -> gs.InferResponse:
        return next(self.call)

    def close(self) -> None:
        self.requests.put(None)


def test_cancelled_stream_leaves_other_streams_working(connection):
    _, stub = connection
    victim = _OpenStream(stub)
    survivor = _OpenStream(stub)
    try:
        request, expected = _fast(1)
        survivor.send(request)
        _check_fast(survivor.receive(), expected, 1)
        for i in range(6):
            victim.send(_slow(100 + i))
        victim.receive()  # the victim is mid-stream, requests in flight
        victim.call.cancel()
        with pytest.raises(grpc.RpcError) as failure:
            while True:
                victim.receive()
        assert failure.value.code() == grpc.StatusCode.CANCELLED
        for i in range(2, 12):
            request, expected = _fast(i)
            survivor.send(request)
            _check_fast(survivor.receive(), expected, i)
    finally:
        victim.close()
        survivor.close()
    assert list(survivor.call) == []


def test_client_that_vanishes_mid_stream_leaves_the_server_serving(server, connection):
    _, stub = connection
    doomed_channel, doomed_stub = grpc_stub(server.grpc_target)
    doomed = _OpenStream(doomed_stub)
    for i in range(4):
        doomed.send(_slow(i))
    doomed.receive()
    doomed_channel.close()
    doomed.close()
    request, expected = _fast(5)
    response = stub.Infer(request, timeout=GRPC_TIMEOUT_S)
    _check_fast(response, expected, 5)


def test_many_concurrent_streams_each_keep_their_order(connection):
    _, stub = connection
    failures: list[str] = []

    def run(stream_index: int) -> None:
        try:
            requests, expected = [], []
            for i in range(30):
                request, want = _fast(stream_index * 1000 + i)
                requests.append(request)
                expected.append(want)
            responses = list(stub.StreamInfer(iter(requests), timeout=GRPC_TIMEOUT_S))
            for i, (response, want) in enumerate(zip(responses, expected)):
                _check_fast(response, want, stream_index * 1000 + i)
            assert len(responses) == 30
        except Exception as exc:  # reported by the main thread
            failures.append(f"stream {stream_index}: {exc!r}")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GRPC_TIMEOUT_S + 5)
    assert not failures, failures
