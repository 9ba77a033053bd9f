"""v2 model repository extension over HTTP in explicit model control mode,
through tritonclient.http: index with states, load, unload, reload, loading
a missing or broken model (400 with the reason; other models keep serving),
a failed reload keeps the old version serving."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import HOST, ServerProcess, build_broken_store

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_broken_store(tmp_path_factory.mktemp("v2_control_store"))


@pytest.fixture(scope="module")
def explicit(store, tmp_path_factory):
    srv = ServerProcess(store, "--model-control-mode=explicit", "--load-model=good",
                        workdir=tmp_path_factory.mktemp("v2-explicit"))
    client = httpclient.InferenceServerClient(f"{HOST}:{srv.port}")
    yield client
    client.close()
    assert srv.stop() == 0, srv.log_text()


def _infer_good(client):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inp = httpclient.InferInput("INPUT0", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("good", [inp]).as_numpy("OUTPUT0"), x)


def test_index_lists_store_with_states(explicit):
    index = explicit.get_model_repository_index()
    by_name = {m["name"]: m for m in index}
    assert by_name["good"]["state"] == "READY" and by_name["good"]["version"] == "1"
    assert {"bad_onnx", "no_file", "half_broken"} <= set(by_name)
    assert explicit.is_model_ready("good") and not explicit.is_model_ready("bad_onnx")


def test_load_missing_model(explicit):
    with pytest.raises(InferenceServerException) as err:
        explicit.load_model("no_such_model")
    assert err.value.status() == "400"
    _infer_good(explicit)


@pytest.mark.parametrize("name", ["bad_onnx", "bad_parse", "no_file"])
def test_load_broken_model(explicit, name):
    with pytest.raises(InferenceServerException) as err:
        explicit.load_model(name)
    assert err.value.status() == "400" and err.value.message()
    assert not explicit.is_model_ready(name)
    _infer_good(explicit)


def test_load_with_config_override_unsupported(explicit):
    with pytest.raises(InferenceServerException) as err:
        explicit.load_model("good", config='{"max_batch_size": 4}')
    assert err.value.status() == "501"


def test_unload_then_load(explicit):
    explicit.unload_model("good")
    assert not explicit.is_model_ready("good")
    with pytest.raises(InferenceServerException) as err:
        _infer_good(explicit)
    assert err.value.status() in ("404", "503")
    explicit.load_model("good")
    assert explicit.is_model_ready("good")
    _infer_good(explicit)
    explicit.load_model("good")  # reload keeps serving
    _infer_good(explicit)


def test_failed_reload_keeps_old_version(explicit, store):
    config = store / "good" / "config.pbtxt"
    text = config.read_text()
    config.write_text(text + "this is { not config\n")
    try:
        with pytest.raises(InferenceServerException) as err:
            explicit.load_model("good")
        assert err.value.status() == "400"
        assert explicit.is_model_ready("good")
        _infer_good(explicit)
    finally:
        config.write_text(text)
    explicit.load_model("good")
    _infer_good(explicit)
