"""/api/health/live and /api/health/ready (facts §2.1, §2.3, §2.9)."""

from __future__ import annotations

import pytest

from conftest import Code, ServerProcess, http_request, nv_status


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


@pytest.fixture(scope="module")
def strict_broken_server(broken_store, tmp_path_factory):
    """Broken models, served anyway, strict readiness (the default)."""
    srv = ServerProcess(broken_store, "--exit-on-error=false",
                        workdir=tmp_path_factory.mktemp("strict"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def lenient_broken_server(broken_store, tmp_path_factory):
    srv = ServerProcess(broken_store, "--exit-on-error=false", "--strict-readiness=false",
                        workdir=tmp_path_factory.mktemp("lenient"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def test_broken_model_makes_strict_server_not_ready(strict_broken_server):
    port = strict_broken_server.port
    status, headers, _ = http_request(port, "GET", "/api/health/ready")
    assert status == 400
    nv_status(headers)  # present and parsable
    status, headers, _ = http_request(port, "GET", "/api/health/live")
    assert status == 200
    assert nv_status(headers).code == Code.SUCCESS


def test_broken_model_without_strict_readiness_is_ready(lenient_broken_server):
    for probe in ("live", "ready"):
        status, headers, _ = http_request(lenient_broken_server.port, "GET", f"/api/health/{probe}")
        assert status == 200, probe
        assert nv_status(headers).code == Code.SUCCESS
