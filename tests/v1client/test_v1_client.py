"""The real v1 client (PyPI's tensorrtserver 1.11.0), unchanged, against
pyserver over HTTP and gRPC: health, status, raw and classification
results, batch > 1, a chosen version, async runs and gRPC streaming.

The client lives in a venv of its own (tests/v1client/setup.sh, run by
``make test`` and again, idempotently, by the fixture below); each call runs
tests/v1client/client_calls.py under it and reads JSON back. Results are
checked against numpy."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import HOST, ServerProcess
from pyserver.examples import onnx_models
from pyserver.examples.onnx_models import classifier_reference
from pyserver.examples.store import LABELS, config, tensor, write_model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("V1CLIENT_DIR", REPO / ".v1client"))
LIBSSL = CACHE / "libssl" / "usr" / "lib" / "x86_64-linux-gnu"
CALL_TIMEOUT_S = 60
RNG = np.random.default_rng(11)

# The first test also waits for the client's set-up (a download on a fresh
# machine); every call below is bounded by CALL_TIMEOUT_S.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def client_python() -> Path:
    if os.environ.get("PYSERVER_SKIP_V1CLIENT"):
        pytest.skip("PYSERVER_SKIP_V1CLIENT is set: the real v1 client tests are off by request")
    done = subprocess.run(["bash", str(HERE / "setup.sh"), str(CACHE)], capture_output=True,
                          text=True, timeout=800)
    if done.returncode != 0:
        pytest.fail(f"setting up the v1 client failed (tests/v1client/setup.sh):\n"
                    f"{done.stdout}\n{done.stderr}")
    return CACHE / "venv" / "bin" / "python"


def _target(protocol: str, server, client_python: Path) -> dict:
    """What each client call needs: the python, the protocol and its url."""
    url = f"{HOST}:{server.port}" if protocol == "http" else server.grpc_target
    return {"python": client_python, "protocol": protocol, "url": url}


@pytest.fixture(scope="module", params=["http", "grpc"])
def target(request, server, client_python) -> dict:
    return _target(request.param, server, client_python)


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory):
    """Explicit model control over a store of two adders (``first`` loaded)."""
    root = tmp_path_factory.mktemp("v1client_control_store")
    for name, constant in (("first", 1.0), ("second", 2.0)):
        write_model(root, name, config(name, 8, [tensor("INPUT0", "FP32", [16])],
                                       [tensor("OUTPUT0", "FP32", [16])]),
                    {1: onnx_models.add_constant(constant)})
    srv = ServerProcess(root, "--model-control-mode=explicit", "--load-model=first",
                        workdir=tmp_path_factory.mktemp("v1client_control_server"))
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module", params=["http", "grpc"])
def explicit_target(request, explicit_server, client_python) -> dict:
    return _target(request.param, explicit_server, client_python)


@pytest.fixture(scope="module")
def grpc_target(server, client_python) -> dict:
    """Streaming is gRPC only: the client refuses it on HTTP before sending
    anything ("Streaming is only allowed with gRPC protocol")."""
    return _target("grpc", server, client_python)


def call(target: dict, kind: str, **spec) -> dict:
    """One client_calls.py run under the client's venv."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(LIBSSL), env.get("LD_LIBRARY_PATH")]))
    request = {"call": kind, "protocol": target["protocol"], "url": target["url"], **spec}
    done = subprocess.run([str(target["python"]), str(HERE / "client_calls.py"),
                           json.dumps(request)], capture_output=True, text=True, env=env,
                          timeout=CALL_TIMEOUT_S)
    assert done.returncode == 0, f"client_calls.py failed:\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"client_calls.py printed nothing:\n{done.stderr}"
    return json.loads(lines[-1])


def _tensor(array: np.ndarray) -> dict:
    return {"dtype": str(array.dtype), "data": array.tolist()}


def _results(answer: dict) -> list[dict]:
    assert "error" not in answer, answer["error"]
    return answer["results"]


def _raw(result: dict, name: str) -> np.ndarray:
    return np.array(result[name]["data"], dtype=result[name]["dtype"])


def _add_sub(target: dict, model: str, dtype, batch_size: int, **spec):
    if np.dtype(dtype).kind == "f":
        a = RNG.standard_normal((batch_size, 16)).astype(dtype)
        b = RNG.standard_normal((batch_size, 16)).astype(dtype)
    else:
        a = RNG.integers(-1000, 1000, (batch_size, 16)).astype(dtype)
        b = RNG.integers(-1000, 1000, (batch_size, 16)).astype(dtype)
    answer = call(target, "infer", model=model, batch_size=batch_size,
                  inputs={"INPUT0": _tensor(a), "INPUT1": _tensor(b)},
                  outputs={"OUTPUT0": "raw", "OUTPUT1": "raw"}, **spec)
    return a, b, answer


def _check_add_sub(a, b, result):
    np.testing.assert_array_equal(_raw(result, "OUTPUT0"), a + b)
    np.testing.assert_array_equal(_raw(result, "OUTPUT1"), a - b)


# -- ServerHealthContext, ServerStatusContext ----------------------------------------

def test_health_live_and_ready(target):
    assert call(target, "health") == {"live": True, "ready": True}


def test_status_of_all_models(target):
    answer = call(target, "status")
    assert "error" not in answer, answer
    assert answer["id"] == "inference:0" and answer["ready_state"] == 2  # SERVER_READY
    assert sorted(answer["models"]) == ["classifier", "image_classifier", "mlp", "simple",
                                        "simple_int32", "simple_nobatch", "versioned"]
    assert answer["models"]["versioned"]["versions"] == {"1": 1, "2": 1, "3": 1}  # MODEL_READY


def test_status_of_one_model(target):
    answer = call(target, "status", model="simple")
    assert list(answer["models"]) == ["simple"]
    simple = answer["models"]["simple"]
    assert simple["platform"] == "onnxruntime_onnx" and simple["max_batch_size"] == 8
    assert simple["inputs"] == ["INPUT0", "INPUT1"] and simple["outputs"] == ["OUTPUT0", "OUTPUT1"]
    assert answer["request_id"] > 0


# -- InferContext ---------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 8])
def test_raw_results(target, batch_size):
    a, b, answer = _add_sub(target, "simple", np.float32, batch_size)
    (result,) = _results(answer)
    _check_add_sub(a, b, result)
    assert (answer["model_name"], answer["model_version"]) == ("simple", 1)


def test_raw_results_int32(target):
    a, b, answer = _add_sub(target, "simple_int32", np.int32, 3)
    (result,) = _results(answer)
    assert result["OUTPUT0"]["dtype"] == "int32"
    _check_add_sub(a, b, result)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_classification_results_with_labels(target, batch_size):
    x = RNG.standard_normal((batch_size, 8)).astype(np.float32)
    answer = call(target, "infer", model="classifier", batch_size=batch_size,
                  inputs={"INPUT": _tensor(x)}, outputs={"OUTPUT": ["class", 3]})
    (result,) = _results(answer)
    batches = result["OUTPUT"]["classes"]
    assert len(batches) == batch_size
    for scores, classes in zip(classifier_reference(x), batches):
        order = np.argsort(-scores, kind="stable")[:3]
        assert [c[0] for c in classes] == order.tolist()
        np.testing.assert_allclose([c[1] for c in classes], scores[order], rtol=1e-5)
        assert [c[2] for c in classes] == [LABELS[i] for i in order]


@pytest.mark.parametrize("version, added", [(2, 2.0), (None, 3.0)])
def test_chosen_version_or_latest(target, version, added):
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    answer = call(target, "infer", model="versioned", version=version, batch_size=2,
                  inputs={"INPUT0": _tensor(x)}, outputs={"OUTPUT0": "raw"})
    (result,) = _results(answer)
    np.testing.assert_allclose(_raw(result, "OUTPUT0"), x + added, rtol=1e-6)
    assert answer["model_version"] == (version or 3)


def test_async_run(target):
    a, b, answer = _add_sub(target, "simple", np.float32, 2, mode="async", repeat=4)
    results = _results(answer)
    assert len(results) == 4
    for result in results:
        _check_add_sub(a, b, result)


def test_unknown_model_is_an_error_for_the_client(target):
    answer = call(target, "infer", model="no_such_model", batch_size=1,
                  inputs={"INPUT0": _tensor(np.zeros((1, 16), np.float32))},
                  outputs={"OUTPUT0": "raw"})
    assert "no_such_model" in answer["error"]


def test_streaming(grpc_target):
    a, b, answer = _add_sub(grpc_target, "simple", np.float32, 3, mode="stream", repeat=5)
    results = _results(answer)
    assert len(results) == 5
    for result in results:
        _check_add_sub(a, b, result)


def test_streaming_async(grpc_target):
    a, b, answer = _add_sub(grpc_target, "simple", np.float32, 2, mode="stream_async", repeat=6)
    results = _results(answer)
    assert len(results) == 6
    for result in results:
        _check_add_sub(a, b, result)


# -- ModelRepositoryContext, ModelControlContext ------------------------------------------

def test_repository_index(explicit_target):
    assert call(explicit_target, "repository_index") == {"models": ["first", "second"]}


def test_model_control_load_and_unload(explicit_target):
    zeros = {"INPUT0": _tensor(np.zeros((1, 16), np.float32))}
    assert "error" not in call(explicit_target, "model_control", action="load", model="second")
    answer = call(explicit_target, "infer", model="second", batch_size=1, inputs=zeros,
                  outputs={"OUTPUT0": "raw"})
    np.testing.assert_array_equal(_raw(_results(answer)[0], "OUTPUT0"),
                                  np.full((1, 16), 2.0, np.float32))
    assert "error" not in call(explicit_target, "model_control", action="unload", model="second")
    answer = call(explicit_target, "infer", model="second", batch_size=1, inputs=zeros,
                  outputs={"OUTPUT0": "raw"})
    assert "second" in answer["error"]


def test_model_control_of_a_missing_model_is_an_error(explicit_target):
    answer = call(explicit_target, "model_control", action="load", model="missing")
    assert "missing" in answer["error"]
