"""Prometheus metrics after known traffic (facts §4): exact v1 counts,
names and labels, plus pyserver's latency histograms.

Traffic on ``tagged`` (identity FP32[4], metric_tags team and cost-center),
over HTTP and gRPC: 8 successful requests carrying 13 inferences, and 2
requests refused for a wrong input size. ``plain`` gets nothing; requests
for an unknown model are reported nowhere."""

from __future__ import annotations

import http.client
import re
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import (GRPC_TIMEOUT_S, HOST, Code, ServerProcess, grpc_infer_request, grpc_stub,
                      identity_config, infer, nv_status, request_header)
from prometheus_client.parser import text_string_to_metric_families
from pyserver import _core
from pyserver.examples import onnx_models
from pyserver.examples.store import write_model

TAGS = ('metric_tags { key: "team" value: "vision" }\n'
        'metric_tags { key: "cost-center" value: "42" }\n')
TAGGED = {"model": "tagged", "version": "1", "_team": "vision", "_cost_center": "42"}
PLAIN = {"model": "plain", "version": "1"}
SUCCESSES, INFERENCES, FAILURES = 8, 13, 2
V1_COUNTERS = ["nv_inference_request_success", "nv_inference_request_failure",
               "nv_inference_count", "nv_inference_exec_count",
               "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
               "nv_inference_compute_duration_us"]
HISTOGRAMS = ["pyserver_request_duration_us", "pyserver_queue_duration_us",
              "pyserver_compute_duration_us"]
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics_store")
    model = onnx_models.identity("FP32", ["batch", 4])
    write_model(root, "tagged", identity_config("tagged", "FP32", [4]) + TAGS, {1: model})
    write_model(root, "plain", identity_config("plain", "FP32", [4]), {1: model})
    return root


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    srv = ServerProcess(store, workdir=tmp_path_factory.mktemp("metrics_server"))
    _send_known_traffic(srv)
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code}:\n{srv.log_text()}"


def _x(batch_size: int) -> np.ndarray:
    return np.arange(batch_size * 4, dtype=np.float32).reshape(batch_size, 4)


def _send_known_traffic(srv: ServerProcess) -> None:
    for batch_size in (1, 1, 1, 4):  # HTTP: 4 successes, 7 inferences
        result = infer(srv.port, "tagged", request_header(batch_size, ["INPUT0"]),
                       _x(batch_size).tobytes())
        assert result[0] == 200, result
    result = infer(srv.port, "tagged", request_header(2, ["INPUT0"]), _x(1).tobytes())
    assert nv_status(result[1]).code == Code.INVALID_ARG  # failure 1
    result = infer(srv.port, "nowhere", request_header(1, ["INPUT0"]), _x(1).tobytes())
    assert nv_status(result[1]).code == Code.NOT_FOUND  # not reported
    channel, stub = grpc_stub(srv.grpc_target)
    with channel:
        for _ in range(2):  # gRPC: 2 successes, 4 inferences
            response = stub.Infer(grpc_infer_request("tagged", 2, {"INPUT0": _x(2)}),
                                  timeout=GRPC_TIMEOUT_S)
            assert response.request_status.code == Code.SUCCESS
        stream = [grpc_infer_request("tagged", 1, {"INPUT0": _x(1)}) for _ in range(2)]
        for response in stub.StreamInfer(iter(stream), timeout=GRPC_TIMEOUT_S):
            assert response.request_status.code == Code.SUCCESS  # 2 successes, 2 inferences
        bad = grpc_infer_request("tagged", 3, {"INPUT0": _x(2)})
        response = stub.Infer(bad, timeout=GRPC_TIMEOUT_S)
        assert response.request_status.code == Code.INVALID_ARG  # failure 2


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        return answer.read().decode()


@pytest.fixture(scope="module")
def text(server) -> str:
    return _scrape(server.metrics_url)


@pytest.fixture(scope="module")
def samples(text) -> dict:
    """{(name, frozenset(labels.items())): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        out[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return out


def _value(samples: dict, name: str, labels: dict) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


# -- v1 families --------------------------------------------------------------------

def test_success_count_is_exact(samples):
    assert _value(samples, "nv_inference_request_success", TAGGED) == SUCCESSES


def test_failure_count_is_exact(samples):
    assert _value(samples, "nv_inference_request_failure", TAGGED) == FAILURES


def test_inference_count_sums_batch_sizes(samples):
    assert _value(samples, "nv_inference_count", TAGGED) == INFERENCES


def test_exec_count_is_one_per_request_without_a_batcher(samples):
    assert _value(samples, "nv_inference_exec_count", TAGGED) == SUCCESSES


def test_durations_are_positive_and_parts_fit_in_the_whole(samples):
    request = _value(samples, "nv_inference_request_duration_us", TAGGED)
    queue = _value(samples, "nv_inference_queue_duration_us", TAGGED)
    compute = _value(samples, "nv_inference_compute_duration_us", TAGGED)
    assert request > 0 and queue > 0 and compute > 0
    assert queue + compute <= request + 2  # each is truncated to whole µs


def test_untouched_model_reports_zeros(samples):
    for name in V1_COUNTERS:
        assert _value(samples, name, PLAIN) == 0


def test_unknown_model_is_reported_nowhere(text):
    assert "nowhere" not in text


def test_counter_names_are_v1_names_without_total(text):
    for name in V1_COUNTERS:
        assert f"# TYPE {name} counter\n" in text
        assert f"# HELP {name} " in text
    assert "_total" not in text


def test_labels_are_model_version_and_metric_tags(samples):
    labelled = {dict(labels)["model"]: dict(labels) for (name, labels) in samples
                if name == "nv_inference_request_success"}
    assert labelled == {"tagged": TAGGED, "plain": PLAIN}


def test_cpu_instances_have_no_gpu_uuid(text):
    assert "gpu_uuid" not in text


def test_load_ratio_is_not_provided(text):
    assert "nv_inference_load_ratio" not in text


# -- pyserver's latency histograms -------------------------------------------------------

@pytest.mark.parametrize("name", HISTOGRAMS)
def test_histogram_count_equals_successes(samples, name):
    assert _value(samples, f"{name}_count", TAGGED) == SUCCESSES
    assert _value(samples, f"{name}_bucket", {**TAGGED, "le": "+Inf"}) == SUCCESSES


@pytest.mark.parametrize("name", HISTOGRAMS)
def test_histogram_buckets_are_cumulative_over_core_bounds(samples, name):
    bounds = _core.latency_buckets_us()
    counts = []
    for (sample, labels), value in samples.items():
        labels = dict(labels)
        if sample == f"{name}_bucket" and labels.get("model") == "tagged":
            counts.append((float(labels["le"]), value))
    counts.sort()
    assert [bound for bound, _ in counts] == [*bounds, float("inf")]
    values = [value for _, value in counts]
    assert values == sorted(values)


def test_histogram_sums_match_the_v1_counters(samples):
    for histogram, counter in zip(HISTOGRAMS, ["nv_inference_request_duration_us",
                                               "nv_inference_queue_duration_us",
                                               "nv_inference_compute_duration_us"]):
        total = _value(samples, f"{histogram}_sum", TAGGED)
        assert total > 0
        assert abs(total - _value(samples, counter, TAGGED)) <= 1.0


def test_untouched_model_histograms_are_empty(samples):
    for name in HISTOGRAMS:
        assert _value(samples, f"{name}_count", PLAIN) == 0


# -- the endpoint ----------------------------------------------------------------------------

def test_exposition_parses_as_prometheus_text(text):
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for name in V1_COUNTERS:
        assert families[name] == "counter"
    for name in HISTOGRAMS:
        assert families[name] == "histogram"


def test_scraping_changes_no_count(server, text):
    assert _scrape(server.metrics_url) == text


def test_trailing_slash_is_served(server):
    assert "nv_inference_count" in _scrape(server.metrics_url + "/")


def test_other_method_is_405(server):
    conn = http.client.HTTPConnection(HOST, server.metrics_port, timeout=10)
    try:
        conn.request("POST", "/metrics", body=b"")
        assert conn.getresponse().status == 405
    finally:
        conn.close()


def test_other_path_is_400(server):
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(f"http://{HOST}:{server.metrics_port}/api/status", timeout=10)
    assert failure.value.code == 400


# -- flags --------------------------------------------------------------------------------------

def test_allow_metrics_false_serves_no_metrics_port(store, tmp_path):
    srv = ServerProcess(store, "--allow-metrics=false", workdir=tmp_path)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, srv.metrics_port), timeout=5).close()
        assert "Started Metrics Service" not in srv.log_text()
    finally:
        assert srv.stop() == 0


def test_allow_gpu_metrics_false_has_no_gpu_families(store, tmp_path):
    srv = ServerProcess(store, "--allow-gpu-metrics=false", workdir=tmp_path)
    try:
        text = _scrape(srv.metrics_url)
        assert "nv_inference_request_success" in text
        assert "nv_gpu_" not in text and "nv_energy_consumption" not in text
    finally:
        assert srv.stop() == 0
