"""The v2 HTTP API (/v2) through the real tritonclient.http (2.51.0) and raw
HTTP for what a client cannot send (malformed JSON, wrong binary sizes):
health, metadata, config, infer (JSON and binary tensors), classification,
statistics, repository index and the errors, with Triton's HTTP statuses.
One server per module over the example store."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from conftest import HOST, http_request

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(f"{HOST}:{server.port}")
    yield c
    c.close()


def _inputs(a, b, binary=True, dtype="FP32"):
    i0 = httpclient.InferInput("INPUT0", list(a.shape), dtype)
    i0.set_data_from_numpy(a, binary_data=binary)
    i1 = httpclient.InferInput("INPUT1", list(b.shape), dtype)
    i1.set_data_from_numpy(b, binary_data=binary)
    return [i0, i1]


def _pair(batch=2, dtype=np.float32):
    a = np.arange(16 * batch, dtype=dtype).reshape(batch, 16)
    b = np.full((batch, 16), 3, dtype=dtype)
    return a, b


def _post(server, path, body: bytes, headers=None):
    return http_request(server.port, "POST", path, headers or {}, body)


# -- health and metadata -------------------------------------------------------

def test_health(client):
    assert client.is_server_live()
    assert client.is_server_ready()


def test_server_metadata(client):
    meta = client.get_server_metadata()
    assert meta["name"] == "pyserver"
    assert "binary_tensor_data" in meta["extensions"]
    assert "classification" in meta["extensions"]


def test_model_ready(client):
    assert client.is_model_ready("simple")
    assert client.is_model_ready("simple", "1")
    assert not client.is_model_ready("simple", "7")
    assert not client.is_model_ready("no_such_model")


def test_model_metadata(client):
    meta = client.get_model_metadata("simple")
    assert meta["name"] == "simple" and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]},
                              {"name": "INPUT1", "datatype": "FP32", "shape": [-1, 16]}]
    nobatch = client.get_model_metadata("simple_nobatch")
    assert nobatch["outputs"][0]["shape"] == [16]
    assert client.get_model_metadata("versioned", "2")["versions"] == ["1", "2", "3"]


def test_model_metadata_unknown_model(client):
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("no_such_model")
    assert err.value.status() == "404"
    assert "no_such_model" in err.value.message()


def test_model_config_in_triton_json(client, server):
    cfg = client.get_model_config("simple")
    assert cfg["name"] == "simple" and cfg["max_batch_size"] == 8
    assert cfg["input"][0]["name"] == "INPUT0" and cfg["input"][0]["dims"] == [16]
    assert cfg["input"][0]["data_type"] == "TYPE_FP32"
    assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
    # int64 fields are JSON numbers (perf_analyzer reads them as such)
    status, _, body = http_request(server.port, "GET", "/v2/models/simple/config")
    assert status == 200 and b'"dims": [16]' in body


def test_model_config_prints_fields_that_hold_their_default(client):
    """As Triton prints it (protobuf's always-print-primitive-fields): a non-batching
    model says max_batch_size 0, an input its format, an output its empty label file;
    a message that is not set (dynamic_batching here) stays out."""
    cfg = client.get_model_config("simple_nobatch")
    assert cfg["max_batch_size"] == 0
    assert cfg["backend"] == ""
    assert cfg["input"][0]["format"] == "FORMAT_NONE"
    assert cfg["input"][0]["is_shape_tensor"] is False
    assert cfg["output"][0]["label_filename"] == ""
    assert cfg["instance_group"][0]["gpus"] == []
    assert cfg["parameters"] == {}
    assert "dynamic_batching" not in cfg and "sequence_batching" not in cfg


# -- infer ----------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False])
def test_infer_add_sub(client, binary):
    a, b = _pair()
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary)]
    result = client.infer("simple", _inputs(a, b, binary), outputs=outputs, request_id="r-7")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response["model_name"] == "simple" and response["model_version"] == "1"
    assert response["id"] == "r-7"


def test_infer_default_outputs_and_version(client):
    a, b = _pair(batch=1, dtype=np.int32)
    result = client.infer("simple_int32", _inputs(a, b, dtype="INT32"), model_version="1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_infer_nobatch(client):
    a = np.arange(16, dtype=np.float32)
    b = np.ones(16, dtype=np.float32)
    result = client.infer("simple_nobatch", _inputs(a, b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


def test_classification(client):
    x = httpclient.InferInput("INPUT", [2, 8], "FP32")
    x.set_data_from_numpy(np.stack([np.arange(8, dtype=np.float32)] * 2))
    result = client.infer("classifier", [x],
                          outputs=[httpclient.InferRequestedOutput("OUTPUT", class_count=3)])
    classes = result.as_numpy("OUTPUT")
    assert classes.shape == (2, 3)
    for row in classes:
        parts = [c.decode().split(":") for c in row]
        scores = [float(p[0]) for p in parts]
        assert scores == sorted(scores, reverse=True)
        assert all(len(p) == 3 and p[1].isdigit() for p in parts)  # value:index:label


def test_json_infer_raw(server):
    doc = {"inputs": [{"name": f"INPUT{i}", "datatype": "FP32", "shape": [1, 16],
                       "data": [[float(j) for j in range(16)]]} for i in range(2)]}
    status, headers, body = _post(server, "/v2/models/simple/infer", json.dumps(doc).encode())
    assert status == 200, body
    out = {o["name"]: o for o in json.loads(body)["outputs"]}
    assert out["OUTPUT0"]["data"] == [2.0 * j for j in range(16)]
    assert out["OUTPUT1"]["shape"] == [1, 16]


# -- statistics and repository ------------------------------------------------------

def test_statistics(client):
    a, b = _pair()
    client.infer("simple", _inputs(a, b))
    stats = client.get_inference_statistics("simple")["model_stats"]
    assert len(stats) == 1 and stats[0]["name"] == "simple" and stats[0]["version"] == "1"
    infer = stats[0]["inference_stats"]
    assert infer["success"]["count"] >= 1 and infer["compute_infer"]["ns"] > 0
    assert stats[0]["inference_count"] >= 2
    every = client.get_inference_statistics()["model_stats"]
    assert {"simple", "classifier"} <= {s["name"] for s in every}
    assert client.get_inference_statistics("simple", "1")["model_stats"][0]["version"] == "1"
    with pytest.raises(InferenceServerException) as err:
        client.get_inference_statistics("no_such_model")
    assert err.value.status() == "404"


def test_repository_index(client):
    index = client.get_model_repository_index()
    names = {(m["name"], m.get("version")) for m in index}
    assert ("simple", "1") in names and ("versioned", "3") in names
    assert all(m.get("state") == "READY" for m in index if m["name"] == "simple")


def test_load_refused_when_polling(client):
    with pytest.raises(InferenceServerException) as err:
        client.load_model("simple")
    assert err.value.status() == "503"


# -- bad input: Triton's statuses, JSON error bodies, the server keeps serving ---------

def _error_of(status, body):
    return status, json.loads(body)["error"]


def test_unknown_model_infer(client):
    a, b = _pair()
    with pytest.raises(InferenceServerException) as err:
        client.infer("no_such_model", _inputs(a, b))
    assert err.value.status() == "404" and "no_such_model" in err.value.message()


def test_wrong_dtype(client):
    a, b = _pair(dtype=np.int32)
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", _inputs(a, b, dtype="INT32"))
    assert err.value.status() == "400" and "FP32" in err.value.message()


def test_wrong_shape(client):
    a = np.zeros((1, 15), np.float32)
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", _inputs(a, a))
    assert err.value.status() == "400" and "shape" in err.value.message()
    a = np.zeros((9, 16), np.float32)  # above max_batch_size 8
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", _inputs(a, a))
    assert err.value.status() == "400"


def test_unknown_output(client):
    a, b = _pair()
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", _inputs(a, b), outputs=[httpclient.InferRequestedOutput("NOPE")])
    assert err.value.status() == "400" and "NOPE" in err.value.message()


def test_malformed_json(server):
    status, error = _error_of(*_post(server, "/v2/models/simple/infer", b"{not json")[::2])
    assert status == 400 and "JSON" in error


def test_binary_size_disagrees_with_header(server):
    doc = json.dumps({"inputs": [
        {"name": f"INPUT{i}", "datatype": "FP32", "shape": [1, 16],
         "parameters": {"binary_data_size": 64}} for i in range(2)]}).encode()
    header = {"Inference-Header-Content-Length": str(len(doc))}
    # two inputs of 64 bytes declared, 100 bytes sent
    status, _, body = _post(server, "/v2/models/simple/infer", doc + b"\0" * 100, header)
    assert status == 400 and "binary_data_size" in json.loads(body)["error"]
    status, _, body = _post(server, "/v2/models/simple/infer", doc + b"\0" * 140, header)
    assert status == 400 and "additional" in json.loads(body)["error"]
    status, _, body = _post(server, "/v2/models/simple/infer", doc + b"\0" * 128,
                            {"Inference-Header-Content-Length": str(len(doc) + 500)})
    assert status == 400 and "Inference-Header-Content-Length" in json.loads(body)["error"]
    small = doc.replace(b"64", b"32")
    status, _, body = _post(server, "/v2/models/simple/infer", small + b"\0" * 64,
                            {"Inference-Header-Content-Length": str(len(small))})
    assert status == 400 and "unexpected size" in json.loads(body)["error"]


def test_json_element_count(server):
    doc = {"inputs": [{"name": f"INPUT{i}", "datatype": "FP32", "shape": [1, 16],
                       "data": [1.0] * 15} for i in range(2)]}
    status, _, body = _post(server, "/v2/models/simple/infer", json.dumps(doc).encode())
    assert status == 400 and "elements" in json.loads(body)["error"]


def test_unknown_path_and_method(server):
    status, _, body = http_request(server.port, "GET", "/v2/nothing/here")
    assert status == 400 and "error" in json.loads(body)
    status, _, _ = http_request(server.port, "GET", "/v2/models/simple/infer")
    assert status == 405


def test_still_serving_after_errors(client):
    a, b = _pair()
    assert client.is_server_ready()
    np.testing.assert_array_equal(client.infer("simple", _inputs(a, b)).as_numpy("OUTPUT0"), a + b)


def test_asyncio_client(server):
    aio = pytest.importorskip("tritonclient.http.aio")

    async def run():
        client = aio.InferenceServerClient(f"{HOST}:{server.port}")
        try:
            assert await client.is_server_live() and await client.is_model_ready("simple")
            a, b = _pair()
            inputs = [aio.InferInput("INPUT0", [2, 16], "FP32"),
                      aio.InferInput("INPUT1", [2, 16], "FP32")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            result = await client.infer("simple", inputs)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
            assert (await client.get_model_config("simple"))["max_batch_size"] == 8
            with pytest.raises(InferenceServerException):
                await client.get_model_metadata("no_such_model")
        finally:
            await client.close()

    asyncio.run(run())
