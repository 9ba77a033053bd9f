"""The response cache in a real server process (--cache-size 64 KiB,
explicit model control) over real ONNX models made here, through real
clients: tritonclient.http (v2 HTTP), raw HTTP (v1 and v2 bodies compared
byte for byte), v1 gRPC stubs and v2 gRPC stubs. Hits are checked by what
the server reports (execution counts, v2 cache_hit / cache_miss statistics,
the nv_cache_* metrics) and by what comes back."""

from __future__ import annotations

import concurrent.futures
import json
import re
import urllib.request
import uuid

import grpc
import numpy as np
import pytest

from conftest import (HOST, ServerProcess, grpc_infer_request, grpc_stub, http_request,
                      identity_config, infer, request_header)
from pyserver.examples import onnx_models
from pyserver.examples.store import LABELS, config, tensor, write_model
from pyserver.protos import v2_grpc_service_pb2 as v2pb
from pyserver.protos import v2_grpc_service_pb2_grpc as v2grpc

httpclient = pytest.importorskip("tritonclient.http")

CACHE_BYTES = 64 * 1024
CACHED = "response_cache { enable: true }"
BIG_DIMS = 2048     # FP32: 8 KiB in, 8 KiB out; three entries fit in the cache, four do not
HUGE_DIMS = 20_000  # FP32: 80 KB of input alone, more than the whole cache
MODELS = ("cached", "uncached", "cached_add_sub", "cached_big", "cached_huge", "cached_strings",
          "cached_classifier", "reloadable")


def _adder(value: float, *extra: str) -> tuple[str, bytes]:
    return (config("{name}", 8, [tensor("INPUT0", "FP32", [16])],
                   [tensor("OUTPUT0", "FP32", [16])], *extra), onnx_models.add_constant(value))


def _write_adder(root, name: str, value: float, *extra: str) -> None:
    text, model = _adder(value, *extra)
    write_model(root, name, text.replace("{name}", name), {1: model})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_store")
    _write_adder(root, "cached", 1.0, CACHED)
    _write_adder(root, "uncached", 1.0)
    _write_adder(root, "reloadable", 1.0, CACHED)
    write_model(root, "cached_add_sub",
                config("cached_add_sub", 8, [tensor("INPUT0", "FP32", [16]),
                                             tensor("INPUT1", "FP32", [16])],
                       [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])],
                       CACHED),
                {1: onnx_models.add_sub("FP32", 16)})
    write_model(root, "cached_classifier",
                config("cached_classifier", 8, [tensor("INPUT", "FP32", [8])],
                       [tensor("OUTPUT", "FP32", [10], label_filename="labels.txt")], CACHED),
                {1: onnx_models.classifier(8, 10)}, {"labels.txt": "\n".join(LABELS) + "\n"})
    for name, dtype, dims in (("cached_big", "FP32", BIG_DIMS), ("cached_huge", "FP32", HUGE_DIMS),
                              ("cached_strings", "STRING", 2)):
        write_model(root, name, identity_config(name, dtype, [dims]) + CACHED + "\n",
                    {1: onnx_models.identity(dtype, ["batch", dims])})
    return root


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    srv = ServerProcess(store, f"--cache-size={CACHE_BYTES}", "--model-control-mode=explicit",
                        "--allow-shared-memory",
                        *(f"--load-model={m}" for m in MODELS),
                        workdir=tmp_path_factory.mktemp("cache_server"))
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code}:\n{srv.log_text()}"


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(f"{HOST}:{server.port}")
    yield c
    c.close()


def _stats(client, model: str) -> dict:
    stats = client.get_inference_statistics(model)["model_stats"][0]
    infer = stats["inference_stats"]
    return {"exec": stats["execution_count"], "inferences": stats["inference_count"],
            "success": infer["success"]["count"], "hits": infer["cache_hit"]["count"],
            "hit_ns": infer["cache_hit"]["ns"], "misses": infer["cache_miss"]["count"],
            "miss_ns": infer["cache_miss"]["ns"]}


def _delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in ("exec", "inferences", "success", "hits", "misses")}


def _infer(client, model: str, x: np.ndarray, output: str = "OUTPUT0", dtype: str = "FP32"):
    given = httpclient.InferInput("INPUT0", list(x.shape), dtype)
    given.set_data_from_numpy(x, binary_data=True)
    return client.infer(model, [given]).as_numpy(output)


def _row(seed: float, dims: int = 16) -> np.ndarray:
    return (np.arange(dims, dtype=np.float32) + np.float32(seed)).reshape(1, dims)


# -- hits and misses --------------------------------------------------------------------------

def test_repeated_request_is_answered_from_the_cache_without_executing(client):
    x = _row(100)
    before = _stats(client, "cached")
    answers = [_infer(client, "cached", x) for _ in range(3)]
    change = _delta(_stats(client, "cached"), before)
    for answer in answers:
        np.testing.assert_array_equal(answer, x + 1)
    assert change == {"exec": 1, "inferences": 1, "success": 3, "hits": 2, "misses": 1}


def test_cache_hit_and_miss_durations_are_reported(client):
    x = _row(150)
    before = _stats(client, "cached")
    _infer(client, "cached", x)
    _infer(client, "cached", x)
    after = _stats(client, "cached")
    assert after["hit_ns"] > before["hit_ns"]
    assert after["miss_ns"] > before["miss_ns"]


def test_one_different_byte_misses(client):
    x = _row(200)
    y = x.copy()
    y.view(np.uint8)[0, 5] ^= 1  # one byte of one element
    _infer(client, "cached", x)
    before = _stats(client, "cached")
    np.testing.assert_array_equal(_infer(client, "cached", y), y + 1)
    assert _delta(_stats(client, "cached"), before) == {
        "exec": 1, "inferences": 1, "success": 1, "hits": 0, "misses": 1}


def test_different_requested_outputs_miss(client):
    a, b = _row(300), np.full((1, 16), 2, np.float32)
    inputs = []
    for name, data in (("INPUT0", a), ("INPUT1", b)):
        given = httpclient.InferInput(name, [1, 16], "FP32")
        given.set_data_from_numpy(data)
        inputs.append(given)
    both = client.infer("cached_add_sub", inputs)
    before = _stats(client, "cached_add_sub")
    only_diff = client.infer("cached_add_sub", inputs,
                             outputs=[httpclient.InferRequestedOutput("OUTPUT1")])
    assert _delta(_stats(client, "cached_add_sub"), before)["misses"] == 1
    np.testing.assert_array_equal(only_diff.as_numpy("OUTPUT1"), a - b)
    assert only_diff.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(both.as_numpy("OUTPUT0"), a + b)
    again = client.infer("cached_add_sub", inputs,
                         outputs=[httpclient.InferRequestedOutput("OUTPUT1")])
    assert _delta(_stats(client, "cached_add_sub"), before)["hits"] == 1
    np.testing.assert_array_equal(again.as_numpy("OUTPUT1"), a - b)


def test_string_tensors_are_keyed_by_their_bytes(client):
    first = np.array([[b"alpha", b"beta"]], dtype=np.object_)
    other = np.array([[b"alph", b"abeta"]], dtype=np.object_)  # same bytes run together
    before = _stats(client, "cached_strings")
    assert _infer(client, "cached_strings", first, dtype="BYTES").tolist() == first.tolist()
    assert _infer(client, "cached_strings", other, dtype="BYTES").tolist() == other.tolist()
    assert _infer(client, "cached_strings", first, dtype="BYTES").tolist() == first.tolist()
    change = _delta(_stats(client, "cached_strings"), before)
    assert (change["exec"], change["hits"], change["misses"]) == (2, 1, 2)


def test_classification_is_cached_per_class_count(client):
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(1, 8)
    given = httpclient.InferInput("INPUT", [1, 8], "FP32")
    given.set_data_from_numpy(x)

    def top(k: int) -> list:
        wanted = [httpclient.InferRequestedOutput("OUTPUT", class_count=k)]
        return client.infer("cached_classifier", [given], outputs=wanted).as_numpy(
            "OUTPUT").tolist()

    before = _stats(client, "cached_classifier")
    first, again, other = top(3), top(3), top(2)
    scores = onnx_models.classifier_reference(x)[0]
    best = np.argsort(-scores, kind="stable")[:3]
    assert [entry.decode().split(":")[1:] for entry in first[0]] == \
        [[str(i), LABELS[i]] for i in best]
    assert again == first and other == [first[0][:2]]
    change = _delta(_stats(client, "cached_classifier"), before)
    assert (change["exec"], change["hits"], change["misses"]) == (2, 1, 2)


def test_model_without_response_cache_never_caches(client):
    x = _row(400)
    before = _stats(client, "uncached")
    for _ in range(3):
        np.testing.assert_array_equal(_infer(client, "uncached", x), x + 1)
    assert _delta(_stats(client, "uncached"), before) == {
        "exec": 3, "inferences": 3, "success": 3, "hits": 0, "misses": 0}


# -- every front end, byte-identical answers ------------------------------------------------------

def _v2_binary_request(x: np.ndarray, request_id: str) -> tuple[dict, bytes]:
    doc = {"id": request_id,
           "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                       "parameters": {"binary_data_size": x.nbytes}}],
           "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}
    text = json.dumps(doc).encode()
    return {"Inference-Header-Content-Length": str(len(text)),
            "Content-Type": "application/octet-stream"}, text + x.tobytes()


def test_v2_hit_is_byte_identical_to_the_miss_with_its_own_id(server, client):
    x = _row(500)
    before = _stats(client, "cached")
    answers = []
    for request_id in ("first-id", "other-id"):
        headers, body = _v2_binary_request(x, request_id)
        status, reply_headers, reply = http_request(server.port, "POST",
                                                    "/v2/models/cached/infer", headers, body)
        assert status == 200, reply
        answers.append((reply_headers, reply))
    assert _delta(_stats(client, "cached"), before)["hits"] == 1
    (miss_headers, miss), (hit_headers, hit) = answers
    assert b'"id": "first-id"' in miss or b'"id":"first-id"' in miss
    assert hit == miss.replace(b"first-id", b"other-id")
    assert hit_headers["inference-header-content-length"] == \
        miss_headers["inference-header-content-length"]


def test_v1_hit_is_byte_identical_to_the_miss_with_its_own_id(server, client):
    x = _row(600)
    before = _stats(client, "cached")
    answers = [infer(server.port, "cached", request_header(1, ["INPUT0"], ["OUTPUT0"], rid),
                     x.tobytes()) for rid in (11, 12)]
    assert _delta(_stats(client, "cached"), before)["hits"] == 1
    (s1, h1, b1), (s2, h2, b2) = answers
    assert s1 == s2 == 200
    # the outputs, then the binary InferResponseHeader ending in its id (a 1-byte varint)
    assert b1.startswith((x + 1).tobytes()) and b1.endswith(b"\x0b")
    assert b2 == b1[:-1] + b"\x0c"
    assert h1["nv-inferresponse"].endswith("id: 11")
    assert h2["nv-inferresponse"] == h1["nv-inferresponse"].replace("id: 11", "id: 12")


def test_every_front_end_shares_the_cache(server, client):
    x = _row(700)
    before = _stats(client, "cached")
    np.testing.assert_array_equal(_infer(client, "cached", x), x + 1)  # v2 HTTP: the miss
    channel, stub = grpc_stub(server.grpc_target)
    with channel:
        v1 = stub.Infer(grpc_infer_request("cached", 1, {"INPUT0": x}, ["OUTPUT0"]), timeout=10)
    assert v1.request_status.code == 1, v1.request_status  # SUCCESS
    np.testing.assert_array_equal(np.frombuffer(v1.raw_output[0], np.float32), (x + 1)[0])
    with grpc.insecure_channel(server.grpc_target) as channel:
        request = v2pb.ModelInferRequest(model_name="cached", id="grpc-v2")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
        request.raw_input_contents.append(x.tobytes())
        v2 = v2grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert v2.id == "grpc-v2"
    np.testing.assert_array_equal(np.frombuffer(v2.raw_output_contents[0], np.float32),
                                  (x + 1)[0])
    assert _delta(_stats(client, "cached"), before) == {
        "exec": 1, "inferences": 1, "success": 3, "hits": 2, "misses": 1}


def test_hit_writes_into_the_requests_shared_memory_and_the_entry_stays_clean(client):
    shm = pytest.importorskip("tritonclient.utils.shared_memory")
    x = _row(750)
    handles, names = [], []
    try:
        for _ in range(3):
            name = f"cache{uuid.uuid4().hex[:12]}"
            handles.append(shm.create_shared_memory_region(name, f"/pyserver-test-{name}",
                                                           x.nbytes))
            client.register_system_shared_memory(name, f"/pyserver-test-{name}", x.nbytes)
            names.append(name)
        shm.set_shared_memory_region(handles[0], [x])
        from_shm = httpclient.InferInput("INPUT0", [1, 16], "FP32")
        from_shm.set_shared_memory(names[0], x.nbytes)
        in_body = httpclient.InferInput("INPUT0", [1, 16], "FP32")
        in_body.set_data_from_numpy(x)

        def into(region: str) -> list:
            wanted = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
            wanted.set_shared_memory(region, x.nbytes)
            return [wanted]

        before = _stats(client, "cached")
        client.infer("cached", [from_shm], outputs=into(names[1]))     # the miss
        hit = client.infer("cached", [in_body], outputs=into(names[2]))  # the same tensor
        plain = client.infer("cached", [in_body])                        # and again, in the body
        assert _delta(_stats(client, "cached"), before) == {
            "exec": 1, "inferences": 1, "success": 3, "hits": 2, "misses": 1}
        for handle in handles[1:]:
            np.testing.assert_array_equal(
                shm.get_contents_as_numpy(handle, np.float32, [1, 16]), x + 1)
        written = hit.get_output("OUTPUT0")  # no data in the response: it is in the region
        assert "data" not in written and "binary_data_size" not in written["parameters"]
        assert written["parameters"]["shared_memory_region"] == names[2]
        np.testing.assert_array_equal(plain.as_numpy("OUTPUT0"), x + 1)
    finally:
        for name in names:
            client.unregister_system_shared_memory(name)
        for handle in handles:
            shm.destroy_shared_memory_region(handle)


# -- size bound --------------------------------------------------------------------------------

def test_least_recently_used_entry_is_evicted_at_the_size_bound(client):
    a, b, c, d = (_row(seed, BIG_DIMS) for seed in (1000, 2000, 3000, 4000))
    for x in (a, b, c):       # three entries fit
        _infer(client, "cached_big", x)
    _infer(client, "cached_big", a)  # a is now the most recently used; b the least
    _infer(client, "cached_big", d)  # a fourth does not fit: b goes
    before = _stats(client, "cached_big")
    for x in (a, c, d):
        np.testing.assert_array_equal(_infer(client, "cached_big", x), x)
    assert _delta(_stats(client, "cached_big"), before)["exec"] == 0
    np.testing.assert_array_equal(_infer(client, "cached_big", b), b)
    assert _delta(_stats(client, "cached_big"), before)["exec"] == 1


def test_entry_larger_than_the_cache_is_not_stored(client):
    x = _row(5000, HUGE_DIMS)
    before = _stats(client, "cached_huge")
    for _ in range(2):
        np.testing.assert_array_equal(_infer(client, "cached_huge", x), x)
    assert _delta(_stats(client, "cached_huge"), before) == {
        "exec": 2, "inferences": 2, "success": 2, "hits": 0, "misses": 2}


# -- concurrency ---------------------------------------------------------------------------------

def test_concurrent_identical_requests_all_get_the_right_answer(server, client):
    x = _row(6000)

    def one(_):
        own = httpclient.InferenceServerClient(f"{HOST}:{server.port}")
        try:
            return [_infer(own, "cached", x) for _ in range(5)]
        finally:
            own.close()

    before = _stats(client, "cached")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(one, range(16)) for a in batch]
    change = _delta(_stats(client, "cached"), before)
    assert len(answers) == 80
    for answer in answers:
        np.testing.assert_array_equal(answer, x + 1)
    assert change["success"] == 80 and change["hits"] + change["misses"] == 80
    assert 1 <= change["exec"] == change["misses"] <= 16  # at most one miss per client
    after = _stats(client, "cached")
    _infer(client, "cached", x)
    assert _stats(client, "cached")["hits"] == after["hits"] + 1


# -- metrics ---------------------------------------------------------------------------------

def _metric(text: str, name: str, model: str) -> float:
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    assert match, f"{name} for {model} not in metrics"
    return float(match.group(1))


def test_metrics_show_hits_and_misses_with_tritons_names(server, client):
    x = _row(7000)
    for _ in range(3):
        _infer(client, "cached", x)
    stats = _stats(client, "cached")
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    assert _metric(text, "nv_cache_num_hits_per_model", "cached") == stats["hits"]
    assert _metric(text, "nv_cache_num_misses_per_model", "cached") == stats["misses"]
    assert _metric(text, "nv_cache_hit_duration_per_model", "cached") == stats["hit_ns"] // 1000
    assert _metric(text, "nv_cache_miss_duration_per_model", "cached") == \
        stats["miss_ns"] // 1000
    assert _metric(text, "nv_inference_request_success", "cached") == stats["success"]
    assert _metric(text, "nv_inference_exec_count", "cached") == stats["exec"]
    assert "# TYPE nv_cache_num_hits_per_model counter" in text
    assert 'nv_cache_num_hits_per_model{model="uncached"' not in text


# -- model control ------------------------------------------------------------------------------

def _load(port: int, model: str) -> tuple[int, bytes]:
    status, _, body = http_request(port, "POST", f"/v2/repository/models/{model}/load",
                                   {"Content-Type": "application/json"}, b"{}")
    return status, body


def test_reload_with_new_weights_in_the_same_version_misses(server, client, store):
    x = _row(8000)
    for _ in range(2):
        np.testing.assert_array_equal(_infer(client, "reloadable", x), x + 1)
    (store / "reloadable" / "1" / "model.onnx").write_bytes(onnx_models.add_constant(5.0))
    assert _load(server.port, "reloadable") == (200, b"")
    before = _stats(client, "reloadable")
    np.testing.assert_array_equal(_infer(client, "reloadable", x), x + 5)
    assert _delta(_stats(client, "reloadable"), before) == {
        "exec": 1, "inferences": 1, "success": 1, "hits": 0, "misses": 1}
    np.testing.assert_array_equal(_infer(client, "reloadable", x), x + 5)
    assert _delta(_stats(client, "reloadable"), before)["hits"] == 1


def test_response_cache_on_a_sequence_model_is_a_load_error(server, store):
    text, model = _adder(1.0, CACHED, "sequence_batching { }")
    write_model(store, "cached_sequence", text.replace("{name}", "cached_sequence"), {1: model})
    status, body = _load(server.port, "cached_sequence")
    assert status == 400, body
    message = json.loads(body)["error"]
    assert "response_cache" in message and "sequence_batching" in message
    assert "Traceback" not in message
    index = json.loads(http_request(server.port, "POST", "/v2/repository/index",
                                    {"Content-Type": "application/json"}, b"{}")[2])
    entry = next(e for e in index if e["name"] == "cached_sequence")
    assert entry["state"] == "UNAVAILABLE" and "response_cache" in entry["reason"]


def test_config_reports_the_response_cache_setting(client):
    assert client.get_model_config("cached")["response_cache"] == {"enable": True}
    assert "response_cache" not in client.get_model_config("uncached")
