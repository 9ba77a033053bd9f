"""/api/status: formats, one model, normalised config, version states and
per-batch-size statistics (facts §1.4, §2.1, §2.7, §7.3, §7.4)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from google.protobuf import text_format

import pyserver
from conftest import (Code, add_sub_body, assert_error, get_status, http_request, infer,
                      nv_status, parse_json_status, request_header)
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss

EXAMPLE_MODELS = {"simple", "simple_int32", "simple_nobatch", "classifier", "versioned", "mlp",
                  "image_classifier"}


def _check_whole_status(status: ss.ServerStatus) -> None:
    assert status.id == "inference:0"
    assert status.version == pyserver.__version__
    assert status.ready_state == ss.SERVER_READY
    assert status.uptime_ns > 0
    assert set(status.model_status) == EXAMPLE_MODELS


def test_text_is_the_default(server):
    status, headers, body = http_request(server.port, "GET", "/api/status")
    assert status == 200
    assert nv_status(headers).code == Code.SUCCESS
    assert headers["content-type"].startswith("text/plain")
    assert b"\n" in body  # multi-line DebugString form
    _check_whole_status(text_format.Parse(body.decode(), ss.ServerStatus()))


def test_text_explicit(server):
    status, headers, body = http_request(server.port, "GET", "/api/status?format=text")
    assert status == 200
    _check_whole_status(text_format.Parse(body.decode(), ss.ServerStatus()))


def test_binary(server):
    status, headers, body = http_request(server.port, "GET", "/api/status?format=binary")
    assert status == 200
    assert nv_status(headers).code == Code.SUCCESS
    assert headers["content-type"] == "application/octet-stream"
    _check_whole_status(ss.ServerStatus.FromString(body))


def test_json(server):
    status, headers, body = http_request(server.port, "GET", "/api/status?format=json")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert b'"model_status"' in body  # original proto field names
    _check_whole_status(parse_json_status(body))


def test_json_by_accept_header(server):
    status, headers, body = http_request(server.port, "GET", "/api/status",
                                         {"Accept": "application/json"})
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    _check_whole_status(parse_json_status(body))


def test_unknown_format_is_invalid_arg(server):
    assert_error(http_request(server.port, "GET", "/api/status?format=yaml"), Code.INVALID_ARG,
                 "yaml")


@pytest.mark.parametrize("path", ["/api/status/simple?format=binary",
                                  "/api/status/simple/?format=binary"])
def test_one_model(server, path):
    status, headers, body = http_request(server.port, "GET", path)
    assert status == 200
    assert nv_status(headers).code == Code.SUCCESS
    server_status = ss.ServerStatus.FromString(body)
    assert list(server_status.model_status) == ["simple"]
    assert server_status.model_status["simple"].config.name == "simple"


def test_one_model_text(server):
    status, _, body = http_request(server.port, "GET", "/api/status/classifier")
    assert status == 200
    parsed = text_format.Parse(body.decode(), ss.ServerStatus())
    assert list(parsed.model_status) == ["classifier"]


def test_unknown_model_is_invalid_arg(server):
    assert_error(http_request(server.port, "GET", "/api/status/no_such_model"), Code.INVALID_ARG,
                 "no_such_model")


def test_wrong_method_is_405(server):
    assert http_request(server.port, "POST", "/api/status")[0] == 405


def test_normalised_config(server):
    models = get_status(server.port).model_status
    simple = models["simple"].config
    assert simple.platform == "onnxruntime_onnx"
    assert simple.max_batch_size == 8
    assert simple.version_policy.WhichOneof("policy_choice") == "latest"
    assert simple.version_policy.latest.num_versions == 1
    assert simple.default_model_filename == "model.onnx"
    assert [(g.name, g.count, g.kind) for g in simple.instance_group] == [
        ("simple", 1, mc.ModelInstanceGroup.KIND_CPU)]
    assert [(i.name, i.data_type, list(i.dims)) for i in simple.input] == [
        ("INPUT0", mc.TYPE_FP32, [16]), ("INPUT1", mc.TYPE_FP32, [16])]
    # An unnamed group is named <model>_<index> (facts §7.3).
    mlp = models["mlp"].config
    assert [(g.name, g.count, g.kind) for g in mlp.instance_group] == [
        ("mlp_0", 2, mc.ModelInstanceGroup.KIND_CPU)]
    assert models["versioned"].config.version_policy.WhichOneof("policy_choice") == "all"
    assert models["classifier"].config.output[0].label_filename == "labels.txt"


def test_ready_state_per_version(server):
    models = get_status(server.port).model_status
    assert dict(models["versioned"].version_status.items()).keys() == {1, 2, 3}
    for name, versions in (("versioned", {1, 2, 3}), ("simple", {1}), ("mlp", {1})):
        states = {v: s.ready_state for v, s in models[name].version_status.items()}
        assert states == {v: ss.MODEL_READY for v in versions}, name
        for s in models[name].version_status.values():
            assert not s.ready_state_reason.message


def test_infer_stats_per_batch_size(server):
    """Known traffic on simple_int32 (no other test here touches it)."""
    port = server.port
    sent = {1: 3, 4: 2, 8: 1}
    before_ms = time.time() * 1000
    for batch_size, count in sent.items():
        a = np.arange(16 * batch_size, dtype=np.int32).reshape(batch_size, 16)
        header = request_header(batch_size, ["INPUT0", "INPUT1"])
        for _ in range(count):
            status, headers, body = infer(port, "simple_int32", header, add_sub_body(a, a))
            assert status == 200, headers
    # one refused request at batch size 2 (too few bytes)
    status, _, _ = infer(port, "simple_int32", request_header(2, ["INPUT0", "INPUT1"]), b"\0" * 8)
    assert status == 400

    version = get_status(port, "simple_int32").model_status["simple_int32"].version_status[1]
    stats = version.infer_stats
    assert set(stats) == {1, 2, 4, 8}
    for batch_size, count in sent.items():
        s = stats[batch_size]
        assert s.success.count == count, batch_size
        assert s.success.total_time_ns > 0
        assert s.compute.count == count
        assert 0 < s.compute.total_time_ns <= s.success.total_time_ns
        assert s.queue.count == count
        assert s.failed.count == 0
    assert stats[2].success.count == 0
    assert stats[2].failed.count == 1
    assert version.model_inference_count == sum(b * n for b, n in sent.items())
    assert version.model_execution_count == sum(sent.values())
    after_ms = time.time() * 1000
    assert before_ms - 1000 <= version.last_inference_timestamp_milliseconds <= after_ms + 1000


def test_status_of_idle_model_has_no_stats(server):
    version = get_status(server.port, "simple_nobatch").model_status["simple_nobatch"]
    entry = version.version_status[1]
    assert len(entry.infer_stats) == 0
    assert entry.model_inference_count == 0
    assert entry.model_execution_count == 0
