"""The exit deadline with a stuck model: on SIGTERM the server waits
--exit-timeout-secs for the requests it accepted, then answers those still
running or queued UNAVAILABLE (v1 and v2), exits even though the model
never returns, with status 3 and a log line that counts what it abandoned.

``stuck`` is a Python model (one instance) whose execute sleeps far past the
deadline; ``simple`` beside it is a healthy ONNX model."""

from __future__ import annotations

import json
import signal
import threading
import time

import numpy as np
import pytest

from conftest import Code, ServerProcess, http_request, infer, nv_status, request_header
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

EXIT_TIMEOUT_S = 2.0
UNLOAD_TIMEOUT_S = 5.0  # pyserver.cli.UNLOAD_TIMEOUT_SECS
STUCK_FOR_S = 25.0      # the stub process ends by itself after this

STUCK = f'''\
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({STUCK_FOR_S})
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests]
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("stuck_store")
    write_model(root, "simple",
                config("simple", 8, [tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
                       [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])]),
                {1: onnx_models.add_sub()})
    stuck = root / "stuck"
    (stuck / "1").mkdir(parents=True)
    (stuck / "config.pbtxt").write_text(
        'name: "stuck"\nbackend: "python"\nmax_batch_size: 4\n'
        f'input [ {tensor("INPUT0", "FP32", [4])} ]\noutput [ {tensor("OUTPUT0", "FP32", [4])} ]\n'
        'instance_group [ { count: 1 kind: KIND_CPU } ]\n')
    (stuck / "1" / "model.py").write_text(STUCK)
    return root


@pytest.fixture(scope="module")
def deadline(store, tmp_path_factory):
    """Two requests on ``stuck`` (one running, one queued behind it), then
    SIGTERM; the tests check what came back and how the process ended."""
    srv = ServerProcess(store, f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
                        workdir=tmp_path_factory.mktemp("deadline"))
    answers: dict = {}
    x = np.ones((1, 4), np.float32)

    def v1_request() -> None:
        answers["v1"] = infer(srv.port, "stuck", request_header(1, ["INPUT0"]), x.tobytes())
        answers["v1_at"] = time.monotonic()

    def v2_request() -> None:
        body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
                                       "data": x.ravel().tolist()}]}).encode()
        answers["v2"] = http_request(srv.port, "POST", "/v2/models/stuck/infer",
                                     {"Content-Type": "application/json"}, body, timeout=60)
        answers["v2_at"] = time.monotonic()

    threads = [threading.Thread(target=v1_request, daemon=True),
               threading.Thread(target=v2_request, daemon=True)]
    try:
        for thread in threads:
            thread.start()
            time.sleep(0.3)
        time.sleep(1.0)  # both read and queued by now (the server does nothing else)
        signalled_at = time.monotonic()
        srv.signal(signal.SIGTERM)
        code = srv.wait(EXIT_TIMEOUT_S + UNLOAD_TIMEOUT_S + 20)
        exited_at = time.monotonic()
        for thread in threads:
            thread.join(10)
        yield {"server": srv, "answers": answers, "code": code,
               "signalled_at": signalled_at, "exited_at": exited_at}
    finally:
        srv.kill()


def test_running_and_queued_requests_are_answered_unavailable(deadline):
    answers = deadline["answers"]
    status, headers, _ = answers["v1"]
    assert status == 400 and nv_status(headers).code == Code.UNAVAILABLE, headers
    assert "exit timeout" in nv_status(headers).msg
    status, _, body = answers["v2"]
    assert status == 503, body
    assert "exit timeout" in json.loads(body)["error"]


def test_answers_come_at_the_exit_timeout(deadline):
    for key in ("v1_at", "v2_at"):
        waited = deadline["answers"][key] - deadline["signalled_at"]
        assert EXIT_TIMEOUT_S - 0.2 <= waited <= EXIT_TIMEOUT_S + 3, (key, waited)


def test_process_exits_though_the_model_is_stuck(deadline):
    took = deadline["exited_at"] - deadline["signalled_at"]
    assert took < EXIT_TIMEOUT_S + UNLOAD_TIMEOUT_S + 5, took
    assert took < STUCK_FOR_S


def test_exit_status_and_log_say_work_was_abandoned(deadline):
    srv = deadline["server"]
    log = srv.log_text()
    assert deadline["code"] == 3, log
    assert "2 requests answered UNAVAILABLE" in log, log
    assert "stuck" in log
