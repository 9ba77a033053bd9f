"""Load failures (facts §7.4, DESIGN "model lifecycle"): with
``--exit-on-error=false`` the good models serve and status shows the broken
versions MODEL_UNAVAILABLE with a reason; by default the server exits 1 and
logs why. The store is conftest.build_broken_store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import (Code, ServerProcess, assert_error, get_status, http_request, infer,
                      identity_config, nv_infer_response, nv_status, request_header,
                      split_infer_body, wait_until, write_identity)
from pyserver.protos import server_status_pb2 as ss

BROKEN = ("bad_parse", "bad_onnx", "bad_name", "no_file")


@pytest.fixture(scope="module")
def server(broken_store, tmp_path_factory):
    srv = ServerProcess(broken_store, "--exit-on-error=false",
                        workdir=tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def _identity(port: int, model: str, version: int | None = None):
    x = np.array([[1.5, -2.0, 3.25, 0.0]], np.float32)
    return x, infer(port, model, request_header(1, ["INPUT0"]), x.tobytes(), version=version)


def _assert_served(port: int, model: str, version: int | None = None, served: int = 1):
    x, (status, headers, body) = _identity(port, model, version)
    assert status == 200, headers
    response = nv_infer_response(headers)
    assert response.model_version == served
    raw, _ = split_infer_body(body, response)
    assert raw["OUTPUT0"] == x.tobytes()


def test_good_models_serve(server):
    _assert_served(server.port, "good")


def test_latest_is_the_highest_ready_version(server):
    _assert_served(server.port, "half_broken", None, served=1)
    _assert_served(server.port, "half_broken", 1, served=1)


def test_every_model_is_in_status(server):
    models = get_status(server.port).model_status
    assert set(models) == {"good", "half_broken", *BROKEN}
    assert models["good"].version_status[1].ready_state == ss.MODEL_READY


@pytest.mark.parametrize("model", BROKEN)
def test_broken_version_is_unavailable_with_reason(server, model):
    status = get_status(server.port, model).model_status[model]
    assert set(status.version_status) == {1}
    version = status.version_status[1]
    assert version.ready_state == ss.MODEL_UNAVAILABLE
    assert version.ready_state_reason.message.strip()


def test_reasons_say_what_is_wrong(server):
    models = get_status(server.port).model_status

    def reason(model, version=1):
        return models[model].version_status[version].ready_state_reason.message

    assert "parse" in reason("bad_parse").lower()
    assert "other_name" in reason("bad_name") and "bad_name" in reason("bad_name")
    assert "model.onnx" in reason("bad_onnx")
    assert "model.onnx" in reason("no_file")
    assert "model.onnx" in reason("half_broken", 2)


def test_half_broken_model_status(server):
    versions = get_status(server.port, "half_broken").model_status["half_broken"].version_status
    assert versions[1].ready_state == ss.MODEL_READY
    assert not versions[1].ready_state_reason.message
    assert versions[2].ready_state == ss.MODEL_UNAVAILABLE
    assert versions[2].ready_state_reason.message


@pytest.mark.parametrize("model", BROKEN)
def test_infer_on_broken_model_fails(server, model):
    _, (status, headers, _) = _identity(server.port, model)
    assert status == 400
    assert nv_status(headers).code in (Code.UNAVAILABLE, Code.NOT_FOUND)
    _, result = _identity(server.port, model, version=1)
    assert result[0] == 400
    assert nv_status(result[1]).code in (Code.UNAVAILABLE, Code.NOT_FOUND)


def test_infer_on_unavailable_version_is_not_found(server):
    _, result = _identity(server.port, "half_broken", version=2)
    assert_error(result, Code.NOT_FOUND, "version 2")


def test_log_names_each_failure(server):
    log = server.log_text()
    for model in (*BROKEN, "half_broken"):
        assert model in log


def test_default_flags_exit_non_zero_and_log_the_reason(broken_store, tmp_path):
    srv = ServerProcess(broken_store, workdir=tmp_path, wait=False)
    code = srv.wait(timeout=30)
    log = srv.log_text()
    assert code != 0, log
    assert "Started HTTPService" not in log
    for model in BROKEN:
        assert model in log
    assert "cannot parse" in log  # bad_parse's reason
    assert "other_name" in log    # bad_name's reason
    assert "exit-on-error" in log


def test_default_flags_exit_on_one_broken_version(tmp_path, example_store):
    """One unloadable version among good models is enough to exit."""
    store = tmp_path / "store"
    shutil.copytree(example_store, store)
    (store / "versioned" / "2" / "model.onnx").write_bytes(b"garbage")
    srv = ServerProcess(store, workdir=tmp_path, wait=False)
    code = srv.wait(timeout=30)
    log = srv.log_text()
    assert code == 1, log
    assert "versioned version 2" in log


def test_missing_model_store_exits_non_zero(tmp_path):
    srv = ServerProcess(tmp_path / "no_such_store", workdir=tmp_path, wait=False)
    assert srv.wait(timeout=30) == 1
    assert "no_such_store" in srv.log_text()


def _exits_or_serves(srv: ServerProcess) -> str:
    """'exited' or 'ready', whichever happens first (bounded)."""
    def settled():
        if srv.proc.poll() is not None:
            return "exited"
        try:
            if http_request(srv.port, "GET", "/api/health/ready", timeout=1)[0] == 200:
                return "ready"
        except OSError:
            pass
        return None
    return wait_until(settled, 30, 0.05, what="server exited or ready")


@pytest.mark.parametrize("policy", ["", "version_policy: { specific { versions: [ 5 ] } }"],
                         ids=["no_version_folder", "specific_version_missing"])
def test_model_without_a_version_to_serve_fails_to_load(tmp_path, policy):
    store = tmp_path / "store"
    write_identity(store, "good")
    model = store / "versionless"
    model.mkdir()
    (model / "config.pbtxt").write_text(identity_config("versionless", "FP32", [4]) + policy)
    if policy:
        write_identity(tmp_path / "spare", "versionless")
        (tmp_path / "spare" / "versionless" / "1").rename(model / "1")
    srv = ServerProcess(store, workdir=tmp_path, wait=False)
    try:
        outcome = _exits_or_serves(srv)
        assert outcome == "exited", "the server started although 'versionless' has no version"
        assert srv.proc.returncode == 1
        assert "versionless" in srv.log_text()
    finally:
        srv.kill()
