"""Graceful shutdown under load on the ``mlp`` model: on SIGTERM the server
stops accepting, answers every request it accepted in full, then exits 0.

The store's ``mlp`` is the example's model (two CPU instances) with a wider
hidden layer, so that a burst of requests is still executing when the signal
arrives."""

from __future__ import annotations

import signal
import socket
import threading
import time

import numpy as np
import pytest

from conftest import (HOST, Code, ServerProcess, http_request, nv_infer_response, nv_status,
                      raw_request, read_response, request_header, split_infer_body)
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

HIDDEN = 4096
BATCH = 32
CASES = 16
_INPUTS = np.random.default_rng(99).standard_normal((CASES, BATCH, 512)).astype(np.float32)
_EXPECTED: list[np.ndarray] = []


def _case(index: int, batch_size: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Input and expected output number ``index`` (references computed once:
    mlp_reference rebuilds the weights on every call)."""
    if not _EXPECTED:
        flat = onnx_models.mlp_reference(_INPUTS.reshape(-1, 512), hidden=HIDDEN)
        _EXPECTED.extend(flat.reshape(CASES, BATCH, 1000))
    index %= CASES
    return _INPUTS[index][:batch_size], _EXPECTED[index][:batch_size]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlp_store")
    write_model(root, "mlp",
                config("mlp", 32, [tensor("INPUT0", "FP32", [512])],
                       [tensor("OUTPUT0", "FP32", [1000])],
                       "instance_group [ { count: 2 kind: KIND_CPU } ]"),
                {1: onnx_models.mlp(hidden=HIDDEN)})
    return root


def _mlp_request(x: np.ndarray, request_id: int) -> bytes:
    header = request_header(len(x), ["INPUT0"], request_id=request_id)
    return raw_request("POST", "/api/infer/mlp?format=binary", {"NV-InferRequest": header},
                       x.tobytes())


def _check_mlp_answer(answer, expected: np.ndarray, request_id: int) -> None:
    assert answer is not None, "connection closed without an answer"
    status, headers, body = answer
    assert status == 200, headers
    assert nv_status(headers).code == Code.SUCCESS
    response = nv_infer_response(headers)
    assert response.id == request_id
    raw, _ = split_infer_body(body, response)
    out = np.frombuffer(raw["OUTPUT0"], np.float32).reshape(expected.shape)
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)


def _start(store, tmp_path) -> ServerProcess:
    return ServerProcess(store, workdir=tmp_path)


def test_burst_in_flight_at_sigterm_is_answered(store, tmp_path):
    srv = _start(store, tmp_path)
    try:
        count = CASES
        cases = [_case(i) for i in range(count)]
        socks = [socket.create_connection((HOST, srv.port), timeout=30) for _ in range(count)]
        # warm up each connection (and the instances)
        for i, sock in enumerate(socks):
            x, expected = _case(i, 1)
            sock.sendall(_mlp_request(x, 1000 + i))
            _check_mlp_answer(read_response(sock.makefile("rb")), expected, 1000 + i)
        answers: list = [None] * count
        done_at: list = [0.0] * count

        def receive(i: int) -> None:
            try:
                answers[i] = read_response(socks[i].makefile("rb"))
            except Exception as exc:  # reported below
                answers[i] = exc
            done_at[i] = time.monotonic()

        for i, sock in enumerate(socks):
            sock.sendall(_mlp_request(cases[i][0], i + 1))
        # The request data is in the server's socket buffers now; once a later
        # request on another connection is answered, the event loop has read
        # (and so accepted) all of them.
        assert http_request(srv.port, "GET", "/api/health/live")[0] == 200
        threads = [threading.Thread(target=receive, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        signalled_at = time.monotonic()
        srv.signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        for i in range(count):
            assert not isinstance(answers[i], Exception), answers[i]
            _check_mlp_answer(answers[i], cases[i][1], i + 1)
        assert max(done_at) > signalled_at, "nothing was in flight at SIGTERM"
        code = srv.wait(15)
        assert code == 0, srv.log_text()
        assert "server stopped" in srv.log_text()
        for sock in socks:
            sock.close()
    finally:
        srv.kill()


def test_concurrent_clients_through_sigterm(store, tmp_path):
    """Clients keep sending through the signal. Every answer is complete:
    200 with the right outputs, or 400 UNAVAILABLE once the server is
    exiting; a connection may only end without an answer after the signal."""
    _case(0)
    srv = _start(store, tmp_path)
    clients = 6
    signalled_at = [float("inf")]
    results: list[dict] = [{"ok": 0, "refused": 0, "errors": []} for _ in range(clients)]
    warmed = threading.Barrier(clients + 1, timeout=30)

    def client(index: int) -> None:
        result = results[index]
        try:
            sock = socket.create_connection((HOST, srv.port), timeout=30)
        except OSError as exc:
            result["errors"].append(f"connect: {exc!r}")
            warmed.abort()
            return
        stream = sock.makefile("rb")
        request_id = 0
        waited = False
        try:
            while True:
                request_id += 1
                x, expected = _case(index + request_id, 8)
                sent_at = time.monotonic()
                try:
                    sock.sendall(_mlp_request(x, request_id))
                    answer = read_response(stream)
                except (ConnectionResetError, BrokenPipeError) as exc:
                    answer = exc
                if answer is None or isinstance(answer, Exception):
                    if sent_at < signalled_at[0]:
                        result["errors"].append(f"request {request_id} sent before SIGTERM "
                                                f"got no answer: {answer!r}")
                    return
                status, headers, _ = answer
                if status == 200:
                    _check_mlp_answer(answer, expected, request_id)
                    result["ok"] += 1
                else:
                    request_status = nv_status(headers)
                    assert status == 400 and request_status.code == Code.UNAVAILABLE, answer
                    assert sent_at >= signalled_at[0] - 0.5, "refused long before SIGTERM"
                    result["refused"] += 1
                if result["ok"] >= 3 and not waited:
                    waited = True
                    warmed.wait()
        except AssertionError as exc:
            result["errors"].append(f"request {request_id}: {exc}")
        except threading.BrokenBarrierError:
            result["errors"].append("another client failed before the signal")
        finally:
            sock.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    try:
        for thread in threads:
            thread.start()
        warmed.wait()
        time.sleep(0.2)
        signalled_at[0] = time.monotonic()
        srv.signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads), "a client hung"
        errors = [e for r in results for e in r["errors"]]
        assert not errors, errors
        assert all(r["ok"] >= 3 for r in results), results
        code = srv.wait(15)
        assert code == 0, srv.log_text()
        # nothing listens any more
        with pytest.raises(OSError):
            socket.create_connection((HOST, srv.port), timeout=2).close()
    finally:
        srv.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_server_exits_zero(store, tmp_path, signum):
    srv = _start(store, tmp_path)
    try:
        assert http_request(srv.port, "GET", "/api/health/ready")[0] == 200
        srv.signal(signum)
        assert srv.wait(15) == 0, srv.log_text()
        assert "server stopped" in srv.log_text()
    finally:
        srv.kill()
