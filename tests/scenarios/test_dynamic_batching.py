"""Dynamic batching through a real server: batches form under concurrent
load, batched answers equal unbatched ones, and queue policies and failing
requests affect only the requests concerned."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import (Code, ServerProcess, add_sub_body, assert_error, get_status, infer,
                      nv_infer_response, request_header, split_infer_body)
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

BATCHING = "dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 20000 }"
ADD_SUB_IO = ([tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
              [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])])
MLP_IO = ([tensor("INPUT0", "FP32", [64])], [tensor("OUTPUT0", "FP32", [32])])
SLOW_IO = ([tensor("INPUT0", "FP32", [512])], [tensor("OUTPUT0", "FP32", [1000])])
SLOW_MODEL = dict(in_features=512, hidden=4096, out_features=1000)
CLIENTS = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching") / "store"
    add_sub = {1: onnx_models.add_sub()}
    mlp = {1: onnx_models.mlp(in_features=64, hidden=128, out_features=32)}
    slow = {1: onnx_models.mlp(**SLOW_MODEL)}
    write_model(root, "add_batched", config("add_batched", 8, *ADD_SUB_IO, BATCHING), add_sub)
    write_model(root, "add_direct", config("add_direct", 8, *ADD_SUB_IO), add_sub)
    write_model(root, "mlp_batched", config("mlp_batched", 8, *MLP_IO, BATCHING), mlp)
    write_model(root, "mlp_direct", config("mlp_direct", 8, *MLP_IO), mlp)
    write_model(root, "small_queue", config(
        "small_queue", 4, *SLOW_IO,
        "dynamic_batching { preferred_batch_size: [ 4 ] "
        "default_queue_policy { max_queue_size: 2 } }"), slow)
    write_model(root, "short_timeout", config(
        "short_timeout", 4, *SLOW_IO,
        "dynamic_batching { preferred_batch_size: [ 4 ] "
        "default_queue_policy { default_timeout_microseconds: 1000 } }"), slow)
    write_model(root, "gather", config(
        "gather", 8, [tensor("DATA", "FP32", [4]), tensor("IDX", "INT64", [1])],
        [tensor("OUTPUT", "FP32", [1])], BATCHING), {1: onnx_models.gather()})
    write_model(root, "variable", config(
        "variable", 8, [tensor("INPUT0", "FP32", [-1])], [tensor("OUTPUT0", "FP32", [-1])],
        BATCHING), {1: onnx_models.identity("FP32", ["batch", "n"])})
    return root


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    process = ServerProcess(store, workdir=tmp_path_factory.mktemp("batching-server"))
    yield process
    assert process.stop() == 0, process.log_text()


def burst(count: int, call):
    """Runs ``call(i)`` for i in range(count) from CLIENTS threads at once."""
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(call, range(count)))


def add_sub_request(port: int, model: str, i: int):
    a = np.full((1, 16), i, np.float32)
    b = np.arange(16, dtype=np.float32).reshape(1, 16)
    header = request_header(1, ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"])
    status, headers, body = infer(port, model, header, add_sub_body(a, b))
    assert status == 200, (status, headers, body)
    raw, _ = split_infer_body(body, nv_infer_response(headers))
    return a, b, np.frombuffer(raw["OUTPUT0"], np.float32), np.frombuffer(raw["OUTPUT1"], np.float32)


def mlp_output(port: int, model: str, x: np.ndarray) -> np.ndarray:
    header = request_header(1, ["INPUT0"], ["OUTPUT0"])
    status, headers, body = infer(port, model, header, x.tobytes())
    assert status == 200, (status, headers, body)
    raw, _ = split_infer_body(body, nv_infer_response(headers))
    return np.frombuffer(raw["OUTPUT0"], np.float32)


def counts(port: int, model: str) -> tuple[int, int]:
    version = get_status(port, model).model_status[model].version_status[1]
    return version.model_execution_count, version.model_inference_count


def test_concurrent_requests_are_executed_in_batches(server):
    before = counts(server.port, "add_batched")
    results = burst(64, lambda i: add_sub_request(server.port, "add_batched", i))
    for a, b, sum_, difference in results:
        np.testing.assert_array_equal(sum_, (a + b).ravel())
        np.testing.assert_array_equal(difference, (a - b).ravel())
    executions, inferences = (after - b for after, b in zip(counts(server.port, "add_batched"), before))
    assert inferences == 64
    assert executions < inferences


def test_batched_outputs_equal_unbatched_outputs_element_for_element(server):
    inputs = [np.random.default_rng(i).standard_normal((1, 64)).astype(np.float32)
              for i in range(48)]
    batched = burst(len(inputs), lambda i: mlp_output(server.port, "mlp_batched", inputs[i]))
    direct = [mlp_output(server.port, "mlp_direct", x) for x in inputs]
    for got, want in zip(batched, direct):
        np.testing.assert_array_equal(got, want)
    executions, inferences = counts(server.port, "mlp_batched")
    assert executions < inferences


def test_requests_beyond_max_queue_size_are_refused_at_once(server):
    x = np.ones((1, 512), np.float32).tobytes()
    header = request_header(1, ["INPUT0"], ["OUTPUT0"])
    results = burst(32, lambda i: infer(server.port, "small_queue", header, x))
    refused = [r for r in results if r[0] != 200]
    assert refused, "no request was refused although the queue holds 2"
    for result in refused:
        assert_error(result, Code.UNAVAILABLE, "maximum queue size")
    assert len(refused) < len(results)


def test_requests_whose_queue_timeout_expires_are_rejected(server):
    x = np.ones((1, 512), np.float32).tobytes()
    header = request_header(1, ["INPUT0"], ["OUTPUT0"])
    results = burst(32, lambda i: infer(server.port, "short_timeout", header, x))
    expired = [r for r in results if r[0] != 200]
    assert expired, "no request timed out in the queue"
    for result in expired:
        assert_error(result, Code.UNAVAILABLE, "timeout expired")
    failed = sum(s.failed.count for s in
                 get_status(server.port, "short_timeout").model_status["short_timeout"]
                 .version_status[1].infer_stats.values())
    assert failed == len(expired)


def test_a_request_that_fails_in_a_batch_fails_alone(server):
    data = np.arange(4, dtype=np.float32).reshape(1, 4)
    header = request_header(1, ["DATA", "IDX"], ["OUTPUT"])
    bad = {5, 23, 40}

    def call(i: int):
        index = np.array([[99 if i in bad else i % 4]], np.int64)
        return i, infer(server.port, "gather", header, data.tobytes() + index.tobytes())

    before = counts(server.port, "gather")
    for i, result in burst(48, call):
        if i in bad:
            assert_error(result, Code.INTERNAL, "onnxruntime")
            continue
        status, headers, body = result
        assert status == 200, result
        raw, _ = split_infer_body(body, nv_infer_response(headers))
        assert np.frombuffer(raw["OUTPUT"], np.float32).tolist() == [float(i % 4)]
    executions, inferences = (after - b for after, b in zip(counts(server.port, "gather"), before))
    assert inferences == 48 - len(bad)
    assert executions < inferences


def test_requests_of_different_shapes_are_answered_correctly(server):
    def call(i: int):
        n = 3 if i % 2 else 5
        x = np.full((1, n), i, np.float32)
        header = request_header(1, [{"name": "INPUT0", "dims": [n]}], ["OUTPUT0"])
        status, headers, body = infer(server.port, "variable", header, x.tobytes())
        assert status == 200, (status, headers, body)
        response = nv_infer_response(headers)
        raw, _ = split_infer_body(body, response)
        assert list(response.output[0].raw.dims) == [n]
        return np.frombuffer(raw["OUTPUT0"], np.float32), x.ravel()

    for got, want in burst(40, call):
        np.testing.assert_array_equal(got, want)
