"""Caffe2 NetDef models built in code (weights + predict net), translated to
ONNX at load time and served through a real server, against a numpy
reference of the same network; the translator's operators one by one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from backend_helpers import classifier_reference, platform_config, serve, write_version
from conftest import Code, ServerProcess, assert_error, get_status, infer, request_header
from pyserver.backends import caffe2_to_onnx as c2o
from pyserver.examples import caffe2_models as cm
from pyserver.examples.store import tensor
from pyserver.protos import caffe2_pb2
from pyserver.protos import server_status_pb2 as ss
from onnx import TensorProto

CLASSIFIER_IO = ([tensor("data", "FP32", [3, 8, 8])],
                 [tensor("prob", "FP32", [10]), tensor("fc", "FP32", [10])])
BATCHING = "dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 20000 }"


def netdef_files(predict: bytes, init: bytes) -> dict[str, bytes]:
    return {"model.netdef": predict, "init_model.netdef": init}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("caffe2") / "store"
    files = netdef_files(*cm.classifier())
    write_version(root, "classifier",
                  platform_config("classifier", "caffe2_netdef", 8, *CLASSIFIER_IO), files)
    write_version(root, "classifier_batched", platform_config(
        "classifier_batched", "caffe2_netdef", 8, *CLASSIFIER_IO, BATCHING), files)
    predict = caffe2_pb2.NetDef.FromString(files["model.netdef"])
    predict.op.add().CopyFrom(cm.operator("SpatialSoftmaxWithLoss", ["prob"], ["loss"]))
    write_version(root, "unsupported", platform_config(
        "unsupported", "caffe2_netdef", 8, *CLASSIFIER_IO),
        netdef_files(predict.SerializeToString(), files["init_model.netdef"]))
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    process = ServerProcess(models, "--exit-on-error=false",
                            workdir=tmp_path_factory.mktemp("caffe2-server"))
    yield process
    assert process.stop() == 0, process.log_text()


def images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 4])
def test_classifier_equals_the_numpy_reference(server, batch):
    x = images(batch, seed=batch)
    got = serve(server.port, "classifier", {"data": x}, {"prob": "FP32", "fc": "FP32"}, batch)
    want = classifier_reference(x, cm.classifier_weights())
    np.testing.assert_allclose(got["fc"], want["fc"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["prob"], want["prob"], rtol=1e-4, atol=1e-5)


def test_dynamic_batching_gives_the_unbatched_answers(server):
    xs = [images(1, seed=400 + i) for i in range(16)]

    def call(i):
        return serve(server.port, "classifier_batched", {"data": xs[i]}, {"prob": "FP32"},
                     1)["prob"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(len(xs))))
    weights = cm.classifier_weights()
    for x, got in zip(xs, results):
        np.testing.assert_allclose(got, classifier_reference(x, weights)["prob"], rtol=1e-4,
                                   atol=1e-5)
    version = get_status(server.port, "classifier_batched") \
        .model_status["classifier_batched"].version_status[1]
    assert version.model_execution_count < version.model_inference_count == len(xs)


def test_an_unsupported_operator_is_unavailable_naming_it(server):
    version = get_status(server.port, "unsupported").model_status["unsupported"].version_status[1]
    assert version.ready_state == ss.MODEL_UNAVAILABLE
    assert "SpatialSoftmaxWithLoss" in version.ready_state_reason.message
    assert_error(infer(server.port, "unsupported", request_header(1, ["data"]),
                       images(1).tobytes()), Code.UNAVAILABLE)


def test_status_reports_the_platform(server):
    config = get_status(server.port, "classifier").model_status["classifier"].config
    assert config.platform == "caffe2_netdef"


# -- the translator, operator by operator ------------------------------------------------

def run_net(ops: list, weights: dict[str, np.ndarray], inputs: dict[str, np.ndarray],
            outputs: list[str], int64_outputs: tuple[str, ...] = ()) -> list[np.ndarray]:
    """Translates a predict net of ``ops`` and runs it on onnxruntime."""
    init = caffe2_pb2.NetDef(op=[cm.fill(n, a) for n, a in weights.items()])
    predict = caffe2_pb2.NetDef(op=ops, external_input=[*inputs, *weights])
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}
    model = c2o.translate(
        predict, init,
        [c2o.GraphTensor(n, elem[a.dtype], list(a.shape)) for n, a in inputs.items()],
        [c2o.GraphTensor(n, TensorProto.INT64 if n in int64_outputs else TensorProto.FLOAT, None)
         for n in outputs])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, inputs)


def test_in_place_operators_are_renamed_and_read_in_order():
    x = np.array([[-1.0, 2.0, -3.0]], np.float32)
    (y,) = run_net([cm.operator("Relu", ["x"], ["x"]), cm.operator("Scale", ["x"], ["x"], scale=3.0),
                    cm.operator("Copy", ["x"], ["y"])], {}, {"x": x}, ["y"])
    np.testing.assert_array_equal(y, np.maximum(x, 0) * 3)


def test_legacy_broadcast_aligns_from_the_axis():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = np.array([1.0, 10.0, 100.0], np.float32)
    (y,) = run_net([cm.operator("Add", ["x", "b"], ["y"], broadcast=1, axis=1)], {"b": b},
                   {"x": x}, ["y"])
    np.testing.assert_array_equal(y, x + b[None, :, None])


def test_softmax_normalises_everything_after_the_axis_as_caffe2_does():
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2)).astype(np.float32)
    (y,) = run_net([cm.operator("Softmax", ["x"], ["y"])], {}, {"x": x}, ["y"])
    flat = x.reshape(2, -1)
    want = np.exp(flat) / np.exp(flat).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(y, want.reshape(x.shape), rtol=1e-5)


def test_reshape_flatten_and_global_pooling():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    pooled, reshaped, flat, old_shape = run_net([
        cm.operator("AveragePool", ["x"], ["pooled"], global_pooling=1),
        cm.operator("Reshape", ["x"], ["reshaped", "old_shape"], shape=[0, -1, 4]),
        cm.operator("FlattenToVec", ["x"], ["flat"]),
    ], {}, {"x": x}, ["pooled", "reshaped", "flat", "old_shape"], int64_outputs=("old_shape",))
    np.testing.assert_allclose(pooled, x.mean(axis=(2, 3), keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(reshaped, x.reshape(2, -1, 4))
    np.testing.assert_array_equal(flat, x.reshape(-1))
    np.testing.assert_array_equal(old_shape, [2, 3, 4, 4])


def test_strided_padded_grouped_conv_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    (y,) = run_net([cm.operator("Conv", ["x", "w"], ["y"], kernel=3, stride=2,
                                pad_t=1, pad_l=0, pad_b=1, pad_r=0, group=2)],
                   {"w": w}, {"x": x}, ["y"])
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    want = np.zeros((1, 4, 3, 2), np.float64)
    for o in range(4):
        g = o // 2
        for i in range(3):
            for j in range(2):
                patch = padded[0, 2 * g:2 * g + 2, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                want[0, o, i, j] = (patch * w[o]).sum()
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op, fragment", [
    (cm.operator("Dropout", ["x"], ["y"], is_test=0), "is_test=1"),
    (cm.operator("MaxPool", ["x"], ["y"], kernel=2, order="NHWC"), "NHWC"),
    (cm.operator("RoIAlign", ["x"], ["y"]), "'RoIAlign'"),
    (cm.operator("Relu", ["nowhere"], ["y"]), "'nowhere'"),
])
def test_what_cannot_be_translated_is_an_error_that_says_why(op, fragment):
    with pytest.raises(c2o.TranslationError, match=fragment):
        run_net([op], {}, {"x": np.zeros((1, 1, 2, 2), np.float32)}, ["y"])


def test_an_init_net_of_other_than_fill_operators_is_refused():
    init = caffe2_pb2.NetDef(op=[cm.operator("XavierFillFromFile", [], ["w"])])
    with pytest.raises(c2o.TranslationError, match="XavierFillFromFile"):
        c2o.initializers_from_init_net(init)


def test_fill_operators_give_their_values_and_shapes():
    init = caffe2_pb2.NetDef(op=[
        cm.fill("f", np.arange(6, dtype=np.float32).reshape(2, 3)),
        cm.fill("i", np.array([1, 2], np.int64)),
        cm.operator("ConstantFill", [], ["c"], shape=[2, 2], value=1.5),
    ])
    blobs = c2o.initializers_from_init_net(init)
    np.testing.assert_array_equal(blobs["f"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert blobs["i"].dtype == np.int64 and list(blobs["i"]) == [1, 2]
    np.testing.assert_array_equal(blobs["c"], np.full((2, 2), 1.5, np.float32))
