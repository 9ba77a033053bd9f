"""Every dtype of the identity models (BYTES included, variable dims, a
non-batching BYTES model) through tritonclient.http, with binary and JSON
tensors: the values that go in come back out, with the v2 datatype names."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import HOST, ServerProcess, write_identity
from pyserver.examples.onnx_models import IDENTITY_DTYPES, V1_TO_NUMPY

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

FIXED = [d for d in IDENTITY_DTYPES if d != "STRING"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = tmp_path_factory.mktemp("v2_identity_store")
    for dtype in IDENTITY_DTYPES:
        write_identity(store, f"identity_{dtype.lower()}", dtype, (4,))
    write_identity(store, "identity_var", "FP32", (-1,))
    write_identity(store, "identity_string_nobatch", "STRING", (2, 2), max_batch_size=0)
    srv = ServerProcess(store, workdir=tmp_path_factory.mktemp("server"))
    c = httpclient.InferenceServerClient(f"{HOST}:{srv.port}")
    yield c
    c.close()
    assert srv.stop() == 0, srv.log_text()


def _as_bytes(array) -> list:
    """JSON BYTES come back as str (as from Triton), binary ones as bytes."""
    return [x if isinstance(x, bytes) else x.encode() for x in np.asarray(array).reshape(-1)]


def _v2(dtype: str) -> str:
    return "BYTES" if dtype == "STRING" else dtype


def _values(dtype: str, shape) -> np.ndarray:
    np_type = np.dtype(V1_TO_NUMPY[dtype])
    rng = np.random.default_rng(3)
    if np_type == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np_type.kind in "iu":
        info = np.iinfo(np_type)
        return rng.integers(info.min, info.max, shape, dtype=np_type, endpoint=True)
    return rng.standard_normal(shape).astype(np_type)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("dtype", FIXED)
def test_fixed_dtypes_round_trip(client, dtype, binary):
    if dtype == "FP16" and not binary:
        pytest.skip("FP16 has no JSON form in tritonclient (it refuses it)")
    x = _values(dtype, (3, 4))
    inp = httpclient.InferInput("INPUT0", [3, 4], _v2(dtype))
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    result = client.infer(f"identity_{dtype.lower()}", [inp], outputs=[out])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    assert result.get_output("OUTPUT0")["datatype"] == _v2(dtype)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes(client, binary):
    x = np.array([[b"a", b"", "é".encode(), b"x" * 300]] * 2, dtype=np.object_)
    inp = httpclient.InferInput("INPUT0", [2, 4], "BYTES")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    result = client.infer("identity_string", [inp], outputs=[out])
    assert _as_bytes(result.as_numpy("OUTPUT0")) == _as_bytes(x)
    x = np.array([[b"p", b"q"], [b"r", b"s"]], dtype=np.object_)
    inp = httpclient.InferInput("INPUT0", [2, 2], "BYTES")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("identity_string_nobatch", [inp], outputs=[out])
    assert result.as_numpy("OUTPUT0").shape == (2, 2)
    assert _as_bytes(result.as_numpy("OUTPUT0")) == _as_bytes(x)


def test_variable_dims(client):
    for length in (1, 7):
        x = np.arange(2 * length, dtype=np.float32).reshape(2, length)
        inp = httpclient.InferInput("INPUT0", [2, length], "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("identity_var", [inp]).as_numpy("OUTPUT0"), x)
    assert client.get_model_metadata("identity_var")["inputs"][0]["shape"] == [-1, -1]


def test_bytes_malformed_binary(client):
    inp = httpclient.InferInput("INPUT0", [1, 4], "BYTES")
    inp.set_data_from_numpy(np.array([[b"a", b"b", b"c", b"d"]], dtype=np.object_))
    inp._raw_data = inp._raw_data[:-2]  # the last element overruns the data
    inp._parameters["binary_data_size"] = len(inp._raw_data)
    with pytest.raises(InferenceServerException) as err:
        client.infer("identity_string", [inp])
    assert err.value.status() == "400"
