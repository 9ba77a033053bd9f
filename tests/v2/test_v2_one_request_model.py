"""v1 and v2 are two translations of one request model: a v2 request lands
in the same per-version statistics (v1 status, v2 statistics) and the same
Prometheus counters as a v1 request, and a refused v2 request counts as a
failure the way a refused v1 request does."""

from __future__ import annotations

import json
import re
import urllib.request

import numpy as np

from conftest import get_status, http_request, infer, request_header


def _metric(server, name: str, model: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    match = re.search(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} ([\d.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _v2_infer(server, batch: int, data_len: int = 16) -> int:
    doc = {"inputs": [{"name": f"INPUT{i}", "datatype": "FP32", "shape": [batch, 16],
                       "data": [1.0] * (data_len * batch)} for i in range(2)]}
    status, _, _ = http_request(server.port, "POST", "/v2/models/simple/infer", {},
                                json.dumps(doc).encode())
    return status


def _v1_count(server) -> tuple[int, int]:
    version = get_status(server.port, "simple").model_status["simple"].version_status[1]
    return version.model_inference_count, version.model_execution_count


def test_v1_and_v2_share_statistics_and_metrics(server):
    count0, _ = _v1_count(server)
    success0 = _metric(server, "nv_inference_request_success", "simple")
    failure0 = _metric(server, "nv_inference_request_failure", "simple")
    assert _v2_infer(server, batch=3) == 200
    body = np.ones((2, 16), np.float32).tobytes() * 2
    status, _, _ = infer(server.port, "simple", request_header(2, ["INPUT0", "INPUT1"]), body)
    assert status == 200
    count1, _ = _v1_count(server)
    assert count1 - count0 == 3 + 2
    assert _metric(server, "nv_inference_request_success", "simple") - success0 == 2
    v2_stats = json.loads(http_request(server.port, "GET", "/v2/models/simple/stats")[2])
    assert v2_stats["model_stats"][0]["inference_count"] == count1
    assert _v2_infer(server, batch=1, data_len=15) == 400  # refused before the scheduler
    assert _metric(server, "nv_inference_request_failure", "simple") - failure0 == 1
