"""One store holding a model of every CPU platform (ONNX Runtime, TensorFlow
GraphDef and SavedModel, TorchScript, Python, Caffe2 NetDef): one server
serves them side by side, concurrently, and status names each platform."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="tensorflow is not installed")
pytest.importorskip("torch", reason="torch is not installed")

from backend_helpers import classifier_reference, platform_config, serve, write_version  # noqa: E402
from conftest import ServerProcess, get_status  # noqa: E402
from pyserver.examples import caffe2_models, onnx_models, python_models  # noqa: E402
from pyserver.examples import tensorflow_models, torch_models  # noqa: E402
from pyserver.examples.store import tensor  # noqa: E402
from pyserver.protos import server_status_pb2 as ss  # noqa: E402

ADD_SUB_IO = ([tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
              [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])])
TORCH_IO = ([tensor("INPUT__0", "FP32", [16]), tensor("INPUT__1", "FP32", [16])],
            [tensor("OUTPUT__0", "FP32", [16]), tensor("OUTPUT__1", "FP32", [16])])

# model name -> (platform, config io, files, input names, output names)
ADD_SUB_MODELS = {
    "onnx_add_sub": ("onnxruntime_onnx", ADD_SUB_IO, lambda: {"model.onnx": onnx_models.add_sub()}),
    "graphdef_add_sub": ("tensorflow_graphdef", ADD_SUB_IO,
                         lambda: {"model.graphdef": tensorflow_models.graphdef_add_sub()}),
    "torch_add_sub": ("pytorch_libtorch", TORCH_IO, lambda: {"model.pt": torch_models.add_sub()}),
    "python_add_sub": ("python", ADD_SUB_IO, lambda: {"model.py": python_models.ADD_SUB}),
}
PLATFORMS = {**{name: spec[0] for name, spec in ADD_SUB_MODELS.items()},
             "savedmodel_mlp": "tensorflow_savedmodel", "netdef_classifier": "caffe2_netdef"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "store"
    for name, (platform, io, files) in ADD_SUB_MODELS.items():
        write_version(root, name, platform_config(name, platform, 8, *io), files())
    write_version(root, "savedmodel_mlp", platform_config(
        "savedmodel_mlp", "tensorflow_savedmodel", 8, [tensor("INPUT0", "FP32", [64])],
        [tensor("OUTPUT0", "FP32", [32])]), {"model.savedmodel": tensorflow_models.savedmodel_mlp})
    predict, init = caffe2_models.classifier()
    write_version(root, "netdef_classifier", platform_config(
        "netdef_classifier", "caffe2_netdef", 8, [tensor("data", "FP32", [3, 8, 8])],
        [tensor("prob", "FP32", [10])]), {"model.netdef": predict, "init_model.netdef": init})
    process = ServerProcess(root, workdir=tmp_path_factory.mktemp("mixed-server"))
    yield process
    assert process.stop() == 0, process.log_text()


def add_sub(port: int, name: str, seed: int) -> None:
    torch_names = name.startswith("torch")
    inputs = ("INPUT__0", "INPUT__1") if torch_names else ("INPUT0", "INPUT1")
    outputs = ("OUTPUT__0", "OUTPUT__1") if torch_names else ("OUTPUT0", "OUTPUT1")
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((2, 16)).astype(np.float32) for _ in range(2))
    got = serve(port, name, dict(zip(inputs, (a, b))), {o: "FP32" for o in outputs}, 2)
    np.testing.assert_allclose(got[outputs[0]], a + b, rtol=1e-6)
    np.testing.assert_allclose(got[outputs[1]], a - b, rtol=1e-6)


def test_status_shows_every_platform_ready(server):
    models = get_status(server.port).model_status
    assert {name: m.config.platform for name, m in models.items()} == PLATFORMS
    for name, model in models.items():
        assert model.version_status[1].ready_state == ss.MODEL_READY, name


def test_every_platform_answers_concurrently(server):
    names = list(ADD_SUB_MODELS) * 8
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: add_sub(server.port, names[i], i), range(len(names))))


def test_savedmodel_and_netdef_answer_beside_the_others(server):
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    got = serve(server.port, "savedmodel_mlp", {"INPUT0": x}, {"OUTPUT0": "FP32"}, 3)
    w1, b1, w2, b2 = tensorflow_models.mlp_weights(64, 128, 32)
    np.testing.assert_allclose(got["OUTPUT0"], np.maximum(x @ w1 + b1, 0) @ w2 + b2,
                               rtol=1e-4, atol=1e-4)
    images = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    got = serve(server.port, "netdef_classifier", {"data": images}, {"prob": "FP32"}, 2)
    want = classifier_reference(images, caffe2_models.classifier_weights())["prob"]
    np.testing.assert_allclose(got["prob"], want, rtol=1e-4, atol=1e-5)
