"""The drain that Kubernetes relies on, end to end under load: on SIGTERM
readiness turns false at once (v1 and v2) while liveness stays true; the
server keeps accepting and serving for --drain-hold-secs (the time for
endpoints to be removed); then it stops accepting, finishes what is in
flight and exits 0. No accepted request is lost.

Load: clients that open a fresh connection per request (as traffic through
a Service does) until shortly before the hold ends, and keep-alive clients
on the slow ``mlp`` that go on through the end of the hold."""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time

import numpy as np
import pytest

from conftest import (HOST, Code, ServerProcess, http_request, infer, nv_infer_response,
                      nv_status, raw_request, read_response, request_header, split_infer_body)
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

HOLD_S = 4.0
# Fresh-connection clients stop this long before the hold ends (the
# endpoint has been removed by then).
STOP_BEFORE_HOLD_END_S = 1.0
FRESH_CLIENTS = 3
KEEPALIVE_CLIENTS = 2
HIDDEN = 2048
MLP_BATCH = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("drain_store")
    write_model(root, "simple",
                config("simple", 8, [tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
                       [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])]),
                {1: onnx_models.add_sub()})
    write_model(root, "mlp",
                config("mlp", 32, [tensor("INPUT0", "FP32", [512])],
                       [tensor("OUTPUT0", "FP32", [1000])],
                       "instance_group [ { count: 2 kind: KIND_CPU } ]"),
                {1: onnx_models.mlp(hidden=HIDDEN)})
    return root


class Load:
    """The client threads and what each request came to."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop_fresh = threading.Event()
        self.signalled_at = float("inf")
        self.fresh: list[tuple[float, object]] = []      # (sent at, outcome)
        self.keepalive: list[tuple[float, object]] = []
        self.lock = threading.Lock()
        rng = np.random.default_rng(7)
        self.mlp_x = rng.standard_normal((MLP_BATCH, 512)).astype(np.float32)
        self.mlp_expected = onnx_models.mlp_reference(self.mlp_x, hidden=HIDDEN)
        self.threads = ([threading.Thread(target=self._fresh_client, args=(i,), daemon=True)
                         for i in range(FRESH_CLIENTS)] +
                        [threading.Thread(target=self._keepalive_client, daemon=True)
                         for _ in range(KEEPALIVE_CLIENTS)])

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _record(self, where: list, sent_at: float, outcome: object) -> None:
        with self.lock:
            where.append((sent_at, outcome))

    def _fresh_client(self, index: int) -> None:
        a = np.full((1, 16), float(index), np.float32)
        b = np.arange(16, dtype=np.float32).reshape(1, 16)
        header = request_header(1, ["INPUT0", "INPUT1"])
        while not self.stop_fresh.is_set():
            sent_at = time.monotonic()
            try:
                status, headers, body = infer(self.port, "simple", header,
                                              a.tobytes() + b.tobytes())
                if status != 200:
                    outcome = f"HTTP {status}: {headers.get('nv-status')}"
                else:
                    raw, _ = split_infer_body(body, nv_infer_response(headers))
                    total = np.frombuffer(raw["OUTPUT0"], np.float32)
                    outcome = "ok" if np.array_equal(total, (a + b).ravel()) else "wrong sum"
            except (OSError, http.client.HTTPException) as exc:
                outcome = repr(exc)
            self._record(self.fresh, sent_at, outcome)

    def _keepalive_client(self) -> None:
        header = request_header(MLP_BATCH, ["INPUT0"])
        request = raw_request("POST", "/api/infer/mlp?format=binary",
                              {"NV-InferRequest": header}, self.mlp_x.tobytes())
        try:
            sock = socket.create_connection((HOST, self.port), timeout=30)
        except OSError as exc:
            self._record(self.keepalive, time.monotonic(), repr(exc))
            return
        stream = sock.makefile("rb")
        with sock:
            while True:
                sent_at = time.monotonic()
                try:
                    sock.sendall(request)
                    answer = read_response(stream)
                except (OSError, AssertionError) as exc:
                    self._record(self.keepalive, sent_at, repr(exc))
                    return
                if answer is None:
                    self._record(self.keepalive, sent_at, "closed without an answer")
                    return
                status, headers, body = answer
                if status != 200:
                    self._record(self.keepalive, sent_at,
                                 f"{status} {nv_status(headers).code}")
                    return
                raw, _ = split_infer_body(body, nv_infer_response(headers))
                out = np.frombuffer(raw["OUTPUT0"], np.float32).reshape(MLP_BATCH, 1000)
                close = np.allclose(out, self.mlp_expected, rtol=1e-3, atol=1e-3)
                self._record(self.keepalive, sent_at, "ok" if close else "wrong output")


def _probe(port: int, path: str) -> int:
    return http_request(port, "GET", path, timeout=5)[0]


@pytest.fixture(scope="module")
def drained(store, tmp_path_factory):
    """Runs the whole scenario once; the tests check its record."""
    srv = ServerProcess(store, f"--drain-hold-secs={HOLD_S}", "--exit-timeout-secs=20",
                        workdir=tmp_path_factory.mktemp("drain"))
    load = Load(srv.port)
    record: dict = {"server": srv, "load": load}
    try:
        load.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with load.lock:
                warm = (sum(o == "ok" for _, o in load.fresh) >= 10 and
                        sum(o == "ok" for _, o in load.keepalive) >= 2 * KEEPALIVE_CLIENTS)
            if warm:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"load did not warm up: {load.fresh[-3:]} {load.keepalive[-3:]}")
        load.signalled_at = time.monotonic()
        srv.signal(signal.SIGTERM)
        # readiness: polled until false (at most 1 s), liveness alongside
        probes = []
        while time.monotonic() - load.signalled_at < 1.0:
            v1_ready = _probe(srv.port, "/api/health/ready")
            probes.append((time.monotonic() - load.signalled_at, v1_ready))
            if v1_ready == 400:
                break
        record["v1_ready_probes"] = probes
        record["v2_ready"] = _probe(srv.port, "/v2/health/ready")
        record["v1_live"] = _probe(srv.port, "/api/health/live")
        record["v2_live"] = _probe(srv.port, "/v2/health/live")
        time.sleep(max(0.0, load.signalled_at + HOLD_S - STOP_BEFORE_HOLD_END_S - time.monotonic()))
        record["v1_ready_late_in_hold"] = _probe(srv.port, "/api/health/ready")
        load.stop_fresh.set()
        record["code"] = srv.wait(40)
        record["exited_at"] = time.monotonic()
        load.join(30)
        record["hung"] = [t for t in load.threads if t.is_alive()]
        yield record
    finally:
        srv.kill()


def test_readiness_is_false_at_once_on_both_apis(drained):
    probes = drained["v1_ready_probes"]
    assert probes and probes[-1][1] == 400, probes
    assert probes[-1][0] < 0.5, probes
    assert drained["v2_ready"] == 400
    assert drained["v1_ready_late_in_hold"] == 400


def test_liveness_stays_true_while_draining(drained):
    assert drained["v1_live"] == 200
    assert drained["v2_live"] == 200


def test_new_connections_are_served_during_the_hold(drained):
    load = drained["load"]
    during_hold = [o for sent, o in load.fresh if sent > load.signalled_at]
    assert len(during_hold) >= 5, during_hold
    assert all(o == "ok" for o in during_hold), during_hold


def test_no_accepted_request_is_lost(drained):
    load = drained["load"]
    assert not drained["hung"], "a client hung"
    failed = [(sent - load.signalled_at, o) for sent, o in load.fresh if o != "ok"]
    assert not failed, failed
    hold_end = load.signalled_at + HOLD_S
    for sent, outcome in load.keepalive:
        if sent < hold_end:
            assert outcome == "ok", (sent - load.signalled_at, outcome)
        else:
            # sent once the listeners were closing: answered, refused or closed
            assert outcome in ("ok", f"400 {Code.UNAVAILABLE}", "closed without an answer") or \
                "Connection" in outcome, outcome
    assert sum(o == "ok" and s > load.signalled_at for s, o in load.keepalive) >= 2


def test_exits_zero_after_the_hold(drained):
    srv = drained["server"]
    assert drained["code"] == 0, srv.log_text()
    log = srv.log_text()
    assert "SIGTERM received: readiness is false" in log
    assert "server stopped" in log
    assert drained["exited_at"] - drained["load"].signalled_at >= HOLD_S
    with pytest.raises(OSError):
        socket.create_connection((HOST, srv.port), timeout=2).close()
