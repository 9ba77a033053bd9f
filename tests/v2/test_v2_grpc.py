"""inference.GRPCInferenceService through the real tritonclient.grpc and
tritonclient.grpc.aio (2.51.0): health, metadata, config, ModelInfer with raw
contents, classification, ModelStreamInfer (an error stays on the stream),
statistics, repository index, the error statuses, and model load / unload
in explicit mode. The client runs in a child process (grpc_v2_checks.py
says why); each check is one test here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ServerProcess

if importlib.util.find_spec("tritonclient") is None or importlib.util.find_spec(
        "tritonclient.grpc") is None:
    pytest.skip("tritonclient[grpc] is not installed", allow_module_level=True)

CHECKS = Path(__file__).with_name("grpc_v2_checks.py")
NAMES = ["health", "metadata", "config", "infer", "classification", "infer_errors", "stream",
         "statistics", "repository", "aio"]


def _run_checks(target: str, *extra: str) -> dict:
    done = subprocess.run([sys.executable, str(CHECKS), target, *extra], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def outcome(server):
    return _run_checks(server.grpc_target)


@pytest.mark.parametrize("name", NAMES)
def test_grpc_v2(outcome, name):
    assert outcome.get(name) == "ok", outcome.get(name, "check did not run")


def test_grpc_v2_explicit_model_control(broken_store, tmp_path_factory):
    srv = ServerProcess(broken_store, "--model-control-mode=explicit", "--load-model=good",
                        workdir=tmp_path_factory.mktemp("v2-grpc-explicit"))
    try:
        result = _run_checks(srv.grpc_target, "explicit")
    finally:
        assert srv.stop() == 0, srv.log_text()
    assert result == {"explicit_control": "ok"}, result
