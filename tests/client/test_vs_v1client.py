"""pyserver.client and the real v1 client (tensorrtserver 1.11.0, driven
through tests/v1client/client_calls.py in its own venv) make the same calls
against one server, over HTTP and gRPC, and must agree: health, status,
raw and classification results, batching, a chosen version, streaming, and
error messages. Skipped when the v1 client's venv cannot be set up."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import HOST
from pyserver.client import InferenceServerClient, InferenceServerException

TESTS = Path(__file__).resolve().parents[1]
CLIENT_CALLS = TESTS / "v1client" / "client_calls.py"
CACHE = Path(os.environ.get("V1CLIENT_DIR", TESTS.parent / ".v1client"))
LIBSSL = CACHE / "libssl" / "usr" / "lib" / "x86_64-linux-gnu"
CALL_TIMEOUT_S = 60
RNG = np.random.default_rng(17)

pytestmark = pytest.mark.timeout(900)
# Runs client_calls.py (argv[1]) with the JSON request read from stdin as its argument.
_VIA_STDIN = ("import runpy, sys; path = sys.argv[1]; sys.argv = [path, sys.stdin.read()]; "
              "runpy.run_path(path, run_name='__main__')")


@pytest.fixture(scope="module")
def client_python() -> Path:
    if os.environ.get("PYSERVER_SKIP_V1CLIENT"):
        pytest.skip("PYSERVER_SKIP_V1CLIENT is set: the real v1 client tests are off by request")
    done = subprocess.run(["bash", str(TESTS / "v1client" / "setup.sh"), str(CACHE)],
                          capture_output=True, text=True, timeout=800)
    if done.returncode != 0:
        pytest.skip(f"the v1 client could not be set up (tests/v1client/setup.sh): "
                    f"{done.stderr.strip()[-300:]}")
    return CACHE / "venv" / "bin" / "python"


@pytest.fixture(scope="module", params=["http", "grpc"])
def pair(request, server, client_python):
    """(ours, a function running one real-client call), same server and protocol."""
    protocol = request.param
    url = f"{HOST}:{server.port}" if protocol == "http" else server.grpc_target

    def real(kind: str, **spec) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(LIBSSL), env.get("LD_LIBRARY_PATH")]))
        body = {"call": kind, "protocol": protocol, "url": url, **spec}
        # The request goes through stdin: an image tensor is too long for argv.
        done = subprocess.run([str(client_python), "-c", _VIA_STDIN, str(CLIENT_CALLS)],
                              input=json.dumps(body), capture_output=True, text=True, env=env,
                              timeout=CALL_TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    with InferenceServerClient(url, protocol, timeout=20) as ours:
        yield ours, real


def _tensor(array: np.ndarray) -> dict:
    return {"dtype": str(array.dtype), "data": array.tolist()}


def test_health(pair):
    ours, real = pair
    assert real("health") == {"live": ours.is_live(), "ready": ours.is_ready()}


@pytest.mark.parametrize("model", [None, "simple"])
def test_status(pair, model):
    ours, real = pair
    theirs = real("status", model=model)
    status = ours.get_status(model)
    assert theirs["id"] == status.id and theirs["ready_state"] == status.ready_state
    assert set(theirs["models"]) == set(status.model_status)
    for name, entry in theirs["models"].items():
        config = status.model_status[name].config
        assert entry["platform"] == config.platform
        assert entry["max_batch_size"] == config.max_batch_size
        assert entry["inputs"] == [i.name for i in config.input]
        assert entry["outputs"] == [o.name for o in config.output]
        assert entry["versions"] == {str(v): s.ready_state for v, s in
                                     status.model_status[name].version_status.items()}


@pytest.mark.parametrize("model,dtype,batch", [("simple", np.float32, 3),
                                               ("simple_int32", np.int32, 1)])
def test_infer_raw(pair, model, dtype, batch):
    ours, real = pair
    a = RNG.integers(-50, 50, (batch, 16)).astype(dtype)
    b = RNG.integers(-50, 50, (batch, 16)).astype(dtype)
    theirs = real("infer", model=model, batch_size=batch,
                  inputs={"INPUT0": _tensor(a), "INPUT1": _tensor(b)},
                  outputs={"OUTPUT0": "raw", "OUTPUT1": "raw"})
    assert "error" not in theirs, theirs
    result = ours.infer(model, {"INPUT0": a, "INPUT1": b}, ["OUTPUT0", "OUTPUT1"])
    assert theirs["model_name"] == result.model_name
    assert theirs["model_version"] == result.model_version
    for name in ("OUTPUT0", "OUTPUT1"):
        given = theirs["results"][0][name]
        expected = np.array(given["data"], dtype=given["dtype"])
        assert result.raw[name].dtype == expected.dtype
        np.testing.assert_array_equal(result.raw[name], expected)


def test_infer_classes(pair):
    ours, real = pair
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    theirs = real("infer", model="classifier", batch_size=2, inputs={"INPUT": _tensor(x)},
                  outputs={"OUTPUT": ["class", 4]})
    assert "error" not in theirs, theirs
    result = ours.infer("classifier", {"INPUT": x}, {"OUTPUT": 4})
    expected = theirs["results"][0]["OUTPUT"]["classes"]
    got = [[[c.idx, c.value, c.label] for c in element] for element in result.classes["OUTPUT"]]
    assert [[[i, lbl] for i, _, lbl in e] for e in got] == \
        [[[i, lbl] for i, _, lbl in e] for e in expected]
    np.testing.assert_allclose([[v for _, v, _ in e] for e in got],
                               [[v for _, v, _ in e] for e in expected], rtol=1e-6)


def test_version(pair):
    ours, real = pair
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    theirs = real("infer", model="versioned", version=2, batch_size=1,
                  inputs={"INPUT0": _tensor(x)}, outputs={"OUTPUT0": "raw"})
    result = ours.infer("versioned", {"INPUT0": x}, version=2)
    assert theirs["model_version"] == result.model_version == 2
    np.testing.assert_allclose(result.raw["OUTPUT0"],
                               np.array(theirs["results"][0]["OUTPUT0"]["data"], np.float32))


def test_stream(pair):
    ours, real = pair
    if ours.protocol != "grpc":
        pytest.skip("streaming is gRPC only (both clients refuse it over HTTP)")
    a = RNG.standard_normal((1, 16)).astype(np.float32)
    b = RNG.standard_normal((1, 16)).astype(np.float32)
    theirs = real("infer", model="simple", mode="stream", repeat=3, batch_size=1,
                  inputs={"INPUT0": _tensor(a), "INPUT1": _tensor(b)},
                  outputs={"OUTPUT0": "raw", "OUTPUT1": "raw"})
    ours_results = list(ours.stream_infer("simple", [{"INPUT0": a, "INPUT1": b}] * 3))
    assert len(theirs["results"]) == len(ours_results) == 3
    for given, result in zip(theirs["results"], ours_results):
        np.testing.assert_array_equal(result.raw["OUTPUT0"],
                                      np.array(given["OUTPUT0"]["data"], np.float32))


def test_error_message(pair):
    ours, real = pair
    a = RNG.standard_normal((2, 4)).astype(np.float32)
    b = RNG.standard_normal((2, 16)).astype(np.float32)
    theirs = real("infer", model="simple", batch_size=2,
                  inputs={"INPUT0": _tensor(a), "INPUT1": _tensor(b)},
                  outputs={"OUTPUT0": "raw"})
    assert "error" in theirs
    with pytest.raises(InferenceServerException) as info:
        ours.infer("simple", {"INPUT0": a, "INPUT1": b}, ["OUTPUT0"])
    # Ours always sends the input dims, so the server may word the two errors
    # differently (shape vs byte size); both must name the input.
    assert "INPUT0" in theirs["error"] and "INPUT0" in info.value.message
    assert info.value.code_name == "INVALID_ARG"


def test_async_runs(pair):
    """The real client's async_run and our asyncio client on the same inputs."""
    import asyncio

    from pyserver.client import aio

    ours, real = pair
    a = RNG.integers(-50, 50, (2, 16)).astype(np.float32)
    b = RNG.integers(-50, 50, (2, 16)).astype(np.float32)
    theirs = real("infer", model="simple", mode="async", repeat=3, batch_size=2,
                  inputs={"INPUT0": _tensor(a), "INPUT1": _tensor(b)},
                  outputs={"OUTPUT0": "raw", "OUTPUT1": "raw"})
    assert "error" not in theirs, theirs
    url = ours._transport.target if ours.protocol == "grpc" else \
        f"{ours._transport.host}:{ours._transport.port}"

    async def run():
        async with aio.InferenceServerClient(url, ours.protocol, timeout=20) as client:
            return await asyncio.gather(*[client.infer("simple", {"INPUT0": a, "INPUT1": b})
                                          for _ in range(3)])

    for given, result in zip(theirs["results"], asyncio.run(run())):
        for name in ("OUTPUT0", "OUTPUT1"):
            np.testing.assert_array_equal(result.raw[name],
                                          np.array(given[name]["data"], np.float32))


def test_image_classifier_top_classes(pair):
    """Both clients on the example image classifier, same tensor."""
    ours, real = pair
    x = (RNG.random((1, 3, 224, 224), dtype=np.float32) * 255 - 120).astype(np.float32)
    theirs = real("infer", model="image_classifier", batch_size=1,
                  inputs={"data_0": _tensor(x)}, outputs={"softmaxout_1": ["class", 3]})
    assert "error" not in theirs, theirs
    result = ours.infer("image_classifier", {"data_0": x}, {"softmaxout_1": 3})
    expected = theirs["results"][0]["softmaxout_1"]["classes"][0]
    got = result.classes["softmaxout_1"][0]
    assert [(c.idx, c.label) for c in got] == [(i, lbl) for i, _, lbl in expected]
    np.testing.assert_allclose([c.value for c in got], [v for _, v, _ in expected], rtol=1e-6)
