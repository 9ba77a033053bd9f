"""A client that sends requests but reads none of the answers is bounded:
the answers it has not read are held back at the transport's flow-control
high-water mark (the requests it queued wait instead of being answered into
memory), the connection is dropped after --http-write-timeout-secs, and
other clients are served meanwhile; a client that reads slowly gets every
answer, in order. Run once per parser (tests/run.py)."""

from __future__ import annotations

import socket
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import (HOST, ServerProcess, http_request, nv_infer_response, raw_request,
                      read_response, request_header, split_infer_body)
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

ANSWER_FLOATS = 1 << 20            # each answer: 4 MiB of output
ANSWER_BYTES = ANSWER_FLOATS * 4
PIPELINED = 40                     # 160 MiB of answers, were they all made at once
WRITE_TIMEOUT_S = 3.0
# Server memory the stalled client may cost: about one answer in the
# transport's buffer, plus allocator noise; far below PIPELINED answers.
MEMORY_BOUND_BYTES = 40 * 1024 * 1024


def _tile_model() -> bytes:
    """OUTPUT0 (FP32 [ANSWER_FLOATS]) = INPUT0 (FP32 [1]) repeated."""
    graph = helper.make_graph(
        [helper.make_node("Tile", ["INPUT0", "repeats"], ["OUTPUT0"])], "tile",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [ANSWER_FLOATS])],
        initializer=[numpy_helper.from_array(np.array([ANSWER_FLOATS], np.int64), "repeats")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_models.OPSET)])
    model.ir_version = onnx_models.IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    write_model(store, "tile", config("tile", 0, [tensor("INPUT0", "FP32", [1])],
                                      [tensor("OUTPUT0", "FP32", [ANSWER_FLOATS])]),
                {1: _tile_model()})
    srv = ServerProcess(store, f"--http-write-timeout-secs={WRITE_TIMEOUT_S}",
                        workdir=tmp_path_factory.mktemp("server"))
    yield srv
    log = srv.log_text()
    assert srv.stop() == 0, log
    assert "Traceback" not in log, log


def _request(value: float, request_id: int) -> bytes:
    header = request_header(1, ["INPUT0"], ["OUTPUT0"], request_id=request_id)
    return raw_request("POST", "/api/infer/tile?format=binary", {"NV-InferRequest": header},
                       np.array([value], np.float32).tobytes())


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _answer_of(stream, value: float, request_id: int) -> None:
    status, headers, body = read_response(stream)
    assert status == 200, (headers, body[:200])
    header = nv_infer_response(headers)
    assert header.id == request_id
    raw, _ = split_infer_body(body, header)
    output = np.frombuffer(raw["OUTPUT0"], np.float32)
    assert output.size == ANSWER_FLOATS and output[0] == value and output[-1] == value


def _stalled_client(server) -> socket.socket:
    """A connection with a small receive buffer, that the test never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # before connect
    sock.settimeout(10)
    sock.connect((HOST, server.port))
    return sock


def _served_meanwhile(server) -> float:
    """Seconds another client takes for a health check and a 4 MiB answer."""
    start = time.monotonic()
    assert http_request(server.port, "GET", "/v2/health/ready")[0] == 200
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(_request(7.0, 99))
        _answer_of(sock.makefile("rb"), 7.0, 99)
    return time.monotonic() - start


def test_a_client_reading_no_answers_costs_about_one_answer_of_memory(server):
    for i in range(3):  # warm: model, pool and allocator at their working size
        _served_meanwhile(server)
    before = _rss(server.proc.pid)
    sock = _stalled_client(server)
    try:
        sock.sendall(b"".join(_request(float(i), i + 1) for i in range(PIPELINED)))
        peak = before
        deadline = time.monotonic() + WRITE_TIMEOUT_S * 0.6
        while time.monotonic() < deadline:
            peak = max(peak, _rss(server.proc.pid))
            time.sleep(0.05)
        assert _served_meanwhile(server) < 5.0
        peak = max(peak, _rss(server.proc.pid))
    finally:
        sock.close()
    grown = peak - before
    assert grown < MEMORY_BOUND_BYTES, f"server memory grew {grown / 2**20:.1f} MiB"


def test_a_client_reading_no_answers_is_dropped_after_the_write_timeout(server):
    sock = _stalled_client(server)
    with sock:
        sock.sendall(b"".join(_request(1.0, i + 1) for i in range(PIPELINED)))
        start = time.monotonic()
        time.sleep(WRITE_TIMEOUT_S + 1.5)  # the client reads nothing meanwhile
        assert _served_meanwhile(server) < 5.0
        received = 0
        sock.settimeout(5)
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail(f"still open {time.monotonic() - start:.1f} s after the requests "
                        f"(write timeout {WRITE_TIMEOUT_S} s); {received} bytes read")
    assert received < PIPELINED * ANSWER_BYTES // 4, received


def test_a_client_reading_slowly_gets_every_answer_in_order(server):
    count = 12
    with socket.create_connection((HOST, server.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"".join(_request(float(i), i + 1) for i in range(count)))
        time.sleep(0.5)  # the server fills the socket and pauses, then resumes as we read
        stream = sock.makefile("rb", buffering=256 * 1024)
        for i in range(count):
            _answer_of(stream, float(i), i + 1)
