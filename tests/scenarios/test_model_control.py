"""Model control modes through a real server: explicit load/unload over the
v1 HTTP API, reloads that keep serving, and the none/poll modes."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from conftest import (Code, ServerProcess, assert_error, get_status, http_request, infer,
                      nv_infer_response, nv_status, request_header, split_infer_body)
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model
from pyserver.protos import server_status_pb2

IO = ([tensor("INPUT0", "FP32", [16])], [tensor("OUTPUT0", "FP32", [16])])


def write_adder(root, name: str, versions: dict[int, float], *extra: str) -> None:
    write_model(root, name, config(name, 8, *IO, *extra),
                {v: onnx_models.add_constant(c) for v, c in versions.items()})


def added(port: int, model: str, version: int | None = None) -> float:
    """What the adder model adds to its input (status 200 asserted)."""
    x = np.zeros((1, 16), np.float32)
    status, headers, body = infer(port, model, request_header(1, ["INPUT0"], ["OUTPUT0"]),
                                  x.tobytes(), version=version)
    assert status == 200, (status, headers, body)
    raw, _ = split_infer_body(body, nv_infer_response(headers))
    return float(np.frombuffer(raw["OUTPUT0"], np.float32)[0])


def control(port: int, action: str, model: str):
    return http_request(port, "POST", f"/api/modelcontrol/{action}/{model}")


def index(port: int) -> list[str]:
    status, headers, body = http_request(port, "GET", "/api/repository/index?format=binary")
    assert status == 200 and nv_status(headers).code == Code.SUCCESS
    return [m.name for m in server_status_pb2.ModelRepositoryIndex.FromString(body).models]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("control") / "store"
    write_adder(root, "first", {1: 1.0})
    write_adder(root, "second", {1: 2.0})
    write_adder(root, "third", {1: 3.0})
    return root


@pytest.fixture(scope="module")
def explicit(store, tmp_path_factory):
    process = ServerProcess(store, "--model-control-mode=explicit", "--load-model=first",
                            workdir=tmp_path_factory.mktemp("explicit"))
    yield process
    assert process.stop() == 0, process.log_text()


def test_explicit_mode_loads_only_the_named_models_at_start(explicit):
    assert list(get_status(explicit.port).model_status) == ["first"]
    assert added(explicit.port, "first") == 1.0
    assert_error(infer(explicit.port, "second", request_header(1, ["INPUT0"]), b"\0" * 64),
                 Code.NOT_FOUND, "second")


def test_repository_index_lists_every_model_in_the_store(explicit):
    assert index(explicit.port) == ["first", "second", "third"]


def test_a_load_request_makes_a_model_servable(explicit):
    status, headers, _ = control(explicit.port, "load", "second")
    assert status == 200 and nv_status(headers).code == Code.SUCCESS
    assert added(explicit.port, "second") == 2.0


def test_an_unload_request_removes_a_model(explicit):
    assert control(explicit.port, "load", "third")[0] == 200
    status, headers, _ = control(explicit.port, "unload", "third")
    assert status == 200 and nv_status(headers).code == Code.SUCCESS
    assert "third" not in get_status(explicit.port).model_status
    assert_error(infer(explicit.port, "third", request_header(1, ["INPUT0"]), b"\0" * 64),
                 Code.NOT_FOUND, "third")


def test_loading_a_model_that_is_not_in_the_store_is_not_found(explicit):
    assert_error(control(explicit.port, "load", "absent"), Code.NOT_FOUND, "absent")


@pytest.mark.parametrize("name", ["..", ".", "%2e%2e"])
def test_a_load_request_cannot_leave_the_store(explicit, name):
    before = set(get_status(explicit.port).model_status)
    status, headers, _ = control(explicit.port, "load", name)
    assert status == 400
    assert nv_status(headers).code in (Code.INVALID_ARG, Code.NOT_FOUND)
    assert set(get_status(explicit.port).model_status) == before


def test_a_malformed_control_path_is_400(explicit):
    assert http_request(explicit.port, "POST", "/api/modelcontrol/restart/first")[0] == 400
    assert http_request(explicit.port, "GET", "/api/modelcontrol/load/first")[0] == 405


def test_a_reload_serves_the_new_version_without_failing_requests(explicit, store):
    assert control(explicit.port, "load", "first")[0] == 200
    failures = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                added(explicit.port, "first")
            except AssertionError as exc:
                failures.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        staged = store.parent / "staged_v2"
        write_adder(staged, "first", {2: 20.0})
        shutil.move(str(staged / "first" / "2"), str(store / "first" / "2"))
        assert control(explicit.port, "load", "first")[0] == 200
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
    assert not failures, failures[:3]
    assert added(explicit.port, "first") == 20.0
    versions = get_status(explicit.port).model_status["first"].version_status
    assert list(versions) == [2]


def test_a_failed_reload_keeps_the_loaded_model_serving(explicit, store):
    assert control(explicit.port, "load", "second")[0] == 200
    good = (store / "second" / "config.pbtxt").read_text()
    (store / "second" / "config.pbtxt").write_text(good.replace("max_batch_size", "max_batch_sise"))
    try:
        assert_error(control(explicit.port, "load", "second"), Code.INTERNAL, "second")
        assert added(explicit.port, "second") == 2.0
    finally:
        (store / "second" / "config.pbtxt").write_text(good)


def test_control_requests_are_refused_in_poll_mode(store, tmp_path):
    server = ServerProcess(store, workdir=tmp_path)
    try:
        assert_error(control(server.port, "load", "first"), Code.UNAVAILABLE, "polling")
        assert_error(control(server.port, "unload", "first"), Code.UNAVAILABLE, "polling")
        assert added(server.port, "third") == 3.0
    finally:
        assert server.stop() == 0


def test_none_mode_does_not_pick_up_store_changes(tmp_path):
    root = tmp_path / "store"
    write_adder(root, "adder", {1: 1.0})
    server = ServerProcess(root, "--model-control-mode=none", poll_secs=0.2, workdir=tmp_path)
    try:
        staged = tmp_path / "staged"
        write_adder(staged, "adder", {2: 2.0})
        shutil.move(str(staged / "adder" / "2"), str(root / "adder" / "2"))
        time.sleep(1.0)  # five poll intervals, had polling been on
        assert list(get_status(server.port).model_status["adder"].version_status) == [1]
        assert_error(control(server.port, "load", "adder"), Code.UNAVAILABLE, "explicit")
    finally:
        assert server.stop() == 0
