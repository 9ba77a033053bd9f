"""/api/health/live and /api/health/ready (facts §2.1, §2.3, §2.9); with broken
models: tests/scenarios/test_health_semantics.py."""

from __future__ import annotations

import pytest

from conftest import Code, http_request, nv_status


@pytest.mark.parametrize("probe", ["live", "ready"])
def test_probe_is_200_with_success_status(server, probe):
    status, headers, body = http_request(server.port, "GET", f"/api/health/{probe}")
    assert status == 200
    request_status = nv_status(headers)
    assert request_status.code == Code.SUCCESS
    assert request_status.server_id == "inference:0"
    assert request_status.request_id > 0
    assert body == b""


def test_request_ids_are_unique(server):
    ids = {nv_status(http_request(server.port, "GET", "/api/health/live")[1]).request_id
           for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("path", ["/api/health", "/api/health/", "/api/health/alive",
                                  "/api/health/live/x", "/api/healthz"])
def test_unknown_health_mode_is_400(server, path):
    status, _, _ = http_request(server.port, "GET", path)
    assert status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("probe", ["live", "ready"])
def test_wrong_method_is_405(server, method, probe):
    status, _, _ = http_request(server.port, method, f"/api/health/{probe}")
    assert status == 405

