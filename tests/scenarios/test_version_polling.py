"""Store polling (``--repository-poll-secs=1``): versions and models added or
removed while the server runs are loaded or unloaded without a restart
(facts §7.4). Folders are staged outside the store and moved in or out with
one rename, so a scan never sees half a folder."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from conftest import (Code, ServerProcess, assert_error, get_status, http_request, infer,
                      nv_infer_response, request_header, split_infer_body, wait_until,
                      write_identity)
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model
from pyserver.protos import server_status_pb2 as ss

WAIT_S = 15.0


def _add_constant_config(name: str, policy: str = "all { }") -> str:
    return config(name, 8, [tensor("INPUT0", "FP32", [16])], [tensor("OUTPUT0", "FP32", [16])],
                  f"version_policy: {{ {policy} }}")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("poll_store")
    write_model(root, "poll_model", _add_constant_config("poll_model"),
                {v: onnx_models.add_constant(float(v)) for v in (1, 2)})
    write_model(root, "policy_model", _add_constant_config("policy_model", "latest { num_versions: 1 }"),
                {v: onnx_models.add_constant(float(v)) for v in (1, 2, 3)})
    write_identity(root, "doomed")
    write_model(root, "grows_broken", _add_constant_config("grows_broken"),
                {1: onnx_models.add_constant(1.0)})
    write_model(root, "labelled",
                config("labelled", 8, [tensor("INPUT", "FP32", [8])],
                       [tensor("OUTPUT", "FP32", [10], label_filename="labels.txt")]),
                {1: onnx_models.classifier(8, 10)},
                {"labels.txt": "".join(f"old{i}\n" for i in range(10))})
    return root


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    srv = ServerProcess(store, poll_secs=1, workdir=tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture
def staging(store, tmp_path):
    """A folder on the store's file system, outside the store."""
    path = store.parent / f"staging-{tmp_path.name}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _states(port: int, model: str) -> dict[int, int]:
    status, headers, body = http_request(port, "GET", f"/api/status/{model}?format=binary")
    if status != 200:
        return {}
    return {v: s.ready_state for v, s in
            ss.ServerStatus.FromString(body).model_status[model].version_status.items()}


def _ready_versions(port: int, model: str) -> set[int]:
    return {v for v, s in _states(port, model).items() if s == ss.MODEL_READY}


def _run(port: int, model: str, version: int | None = None):
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    return x, infer(port, model, request_header(1, ["INPUT0"]), x.tobytes(), version=version)


def _check_added(port: int, model: str, version: int | None, added: float, served: int) -> None:
    x, (status, headers, body) = _run(port, model, version)
    assert status == 200, headers
    response = nv_infer_response(headers)
    assert response.model_version == served
    raw, _ = split_infer_body(body, response)
    np.testing.assert_allclose(np.frombuffer(raw["OUTPUT0"], np.float32), (x + added).ravel(),
                               rtol=1e-6)


def test_added_version_is_served(server, store, staging):
    port = server.port
    assert _ready_versions(port, "poll_model") >= {1, 2}
    version_dir = staging / "3"
    version_dir.mkdir()
    (version_dir / "model.onnx").write_bytes(onnx_models.add_constant(3.0))
    os.rename(version_dir, store / "poll_model" / "3")
    wait_until(lambda: 3 in _ready_versions(port, "poll_model"), WAIT_S, what="version 3 ready")
    _check_added(port, "poll_model", 3, 3.0, 3)
    _check_added(port, "poll_model", None, 3.0, 3)  # latest ready version
    _check_added(port, "poll_model", 2, 2.0, 2)


def test_removed_version_is_unloaded(server, store, staging):
    port = server.port
    assert 1 in _ready_versions(port, "poll_model")
    os.rename(store / "poll_model" / "1", staging / "1")
    wait_until(lambda: 1 not in _ready_versions(port, "poll_model"), WAIT_S,
               what="version 1 unloaded")
    assert _states(port, "poll_model").get(1) in (None, ss.MODEL_UNAVAILABLE)
    _, result = _run(port, "poll_model", 1)
    assert_error(result, Code.NOT_FOUND, "version 1")
    _check_added(port, "poll_model", 2, 2.0, 2)  # the others still serve


def test_added_model_is_loaded(server, store, staging):
    port = server.port
    assert_error(http_request(port, "GET", "/api/status/newcomer"), Code.INVALID_ARG)
    write_model(staging, "newcomer", _add_constant_config("newcomer"),
                {5: onnx_models.add_constant(5.0)})
    os.rename(staging / "newcomer", store / "newcomer")
    wait_until(lambda: _ready_versions(port, "newcomer") == {5}, WAIT_S, what="newcomer ready")
    assert "newcomer" in get_status(port).model_status
    _check_added(port, "newcomer", None, 5.0, 5)
    _check_added(port, "newcomer", 5, 5.0, 5)


def test_removed_model_is_unloaded(server, store, staging):
    port = server.port
    assert _ready_versions(port, "doomed") == {1}
    os.rename(store / "doomed", staging / "doomed")
    wait_until(lambda: "doomed" not in get_status(port).model_status, WAIT_S,
               what="doomed removed")
    assert_error(http_request(port, "GET", "/api/status/doomed"), Code.INVALID_ARG, "doomed")
    x = np.zeros((1, 4), np.float32)
    assert_error(infer(port, "doomed", request_header(1, ["INPUT0"]), x.tobytes()),
                 Code.NOT_FOUND, "doomed")


def test_changed_config_is_reloaded(server, store, staging):
    """latest{1} -> all{}: versions 1 and 2 join version 3."""
    port = server.port
    assert _ready_versions(port, "policy_model") == {3}
    new_config = staging / "config.pbtxt"
    new_config.write_text(_add_constant_config("policy_model"))
    os.replace(new_config, store / "policy_model" / "config.pbtxt")
    wait_until(lambda: _ready_versions(port, "policy_model") == {1, 2, 3}, WAIT_S,
               what="policy_model versions 1-3 ready")
    _check_added(port, "policy_model", 1, 1.0, 1)
    _check_added(port, "policy_model", None, 3.0, 3)


def test_broken_new_version_leaves_the_others_serving(server, store, staging):
    port = server.port
    version_dir = staging / "2"
    version_dir.mkdir()
    (version_dir / "model.onnx").write_bytes(b"not an onnx model")
    os.rename(version_dir, store / "grows_broken" / "2")
    wait_until(lambda: _states(port, "grows_broken").get(2) == ss.MODEL_UNAVAILABLE, WAIT_S,
               what="version 2 unavailable")
    status = get_status(port, "grows_broken").model_status["grows_broken"].version_status[2]
    assert status.ready_state_reason.message
    _check_added(port, "grows_broken", None, 1.0, 1)  # latest READY version
    _, result = _run(port, "grows_broken", 2)
    assert result[0] == 400



def _top_label(port: int) -> tuple[int, str]:
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    status, headers, _ = infer(port, "labelled", request_header(1, ["INPUT"], [("OUTPUT", 1)]),
                               x.tobytes())
    assert status == 200, headers
    (top,) = nv_infer_response(headers).output[0].batch_classes[0].cls
    return top.idx, top.label


def test_changed_label_file_is_reloaded(server, store, staging):
    port = server.port
    idx, label = _top_label(port)
    assert label == f"old{idx}"
    new_labels = staging / "labels.txt"
    new_labels.write_text("".join(f"new{i}\n" for i in range(10)))
    os.replace(new_labels, store / "labelled" / "labels.txt")
    wait_until(lambda: _top_label(port) == (idx, f"new{idx}"), 6.0, what="new labels served")
