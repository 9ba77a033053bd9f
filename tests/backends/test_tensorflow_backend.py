"""TensorFlow GraphDef and SavedModel models, made with TensorFlow at test
time, served through a real server (which runs them through TensorFlow's C
API), against the same models run by TensorFlow's Python API in this process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed")

from backend_helpers import platform_config, serve, write_version  # noqa: E402
from conftest import Code, ServerProcess, assert_error, get_status, infer, request_header  # noqa: E402
from pyserver.examples import tensorflow_models as tm  # noqa: E402
from pyserver.examples.store import tensor  # noqa: E402
from pyserver.protos import server_status_pb2 as ss  # noqa: E402

MLP_IO = ([tensor("INPUT0", "FP32", [64])], [tensor("OUTPUT0", "FP32", [32])])
BATCHING = "dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 20000 }"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensorflow") / "store"
    graphdef = tm.graphdef_mlp()
    write_version(root, "mlp_graphdef",
                  platform_config("mlp_graphdef", "tensorflow_graphdef", 8, *MLP_IO),
                  {"model.graphdef": graphdef})
    write_version(root, "mlp_variable", platform_config(
        "mlp_variable", "tensorflow_graphdef", 8, [tensor("INPUT0", "FP32", [-1])], MLP_IO[1]),
        {"model.graphdef": graphdef})
    write_version(root, "mlp_graphdef_batched",
                  platform_config("mlp_graphdef_batched", "tensorflow_graphdef", 8, *MLP_IO,
                                  BATCHING), {"model.graphdef": graphdef})
    write_version(root, "add_sub_int32", platform_config(
        "add_sub_int32", "tensorflow_graphdef", 8,
        [tensor("INPUT0", "INT32", [16]), tensor("INPUT1", "INT32", [16])],
        [tensor("OUTPUT0", "INT32", [16]), tensor("OUTPUT1", "INT32", [16])]),
        {"model.graphdef": tm.graphdef_add_sub("int32")})
    write_version(root, "strings", platform_config(
        "strings", "tensorflow_graphdef", 8, [tensor("INPUT0", "STRING", [3])],
        [tensor("OUTPUT0", "STRING", [3]), tensor("OUTPUT1", "INT32", [3])]),
        {"model.graphdef": tm.graphdef_strings()})
    write_version(root, "strings_batched", platform_config(
        "strings_batched", "tensorflow_graphdef", 8, [tensor("INPUT0", "STRING", [3])],
        [tensor("OUTPUT0", "STRING", [3]), tensor("OUTPUT1", "INT32", [3])], BATCHING),
        {"model.graphdef": tm.graphdef_strings()})
    savedmodel_io = (MLP_IO[0], [*MLP_IO[1], tensor("HIDDEN", "FP32", [128])])
    write_version(root, "mlp_savedmodel",
                  platform_config("mlp_savedmodel", "tensorflow_savedmodel", 8, *savedmodel_io),
                  {"model.savedmodel": tm.savedmodel_mlp})
    write_version(root, "wrong_type", platform_config(
        "wrong_type", "tensorflow_graphdef", 8, [tensor("INPUT0", "FP64", [64])], MLP_IO[1]),
        {"model.graphdef": graphdef})
    write_version(root, "wrong_signature", platform_config(
        "wrong_signature", "tensorflow_savedmodel", 8, *MLP_IO,
        'parameters { key: "TF_SIGNATURE_DEF" value { string_value: "predict" } }'),
        {"model.savedmodel": tm.savedmodel_mlp})
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    process = ServerProcess(models, "--exit-on-error=false",
                            workdir=tmp_path_factory.mktemp("tensorflow-server"))
    yield process
    assert process.stop() == 0, process.log_text()


def session_run(graphdef: bytes, feeds: dict[str, np.ndarray], fetches: list[str]):
    """The GraphDef run by TensorFlow's Python Session: the reference."""
    graph = tf.Graph()
    with graph.as_default():
        definition = tf.compat.v1.GraphDef()
        definition.ParseFromString(graphdef)
        tf.import_graph_def(definition, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run([f"{f}:0" for f in fetches], {f"{k}:0": v for k, v in feeds.items()})


def inputs(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 64)).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 5])
def test_graphdef_outputs_equal_tensorflow_session(server, batch):
    x = inputs(batch)
    got = serve(server.port, "mlp_graphdef", {"INPUT0": x}, {"OUTPUT0": "FP32"}, batch)
    (want,) = session_run(tm.graphdef_mlp(), {"INPUT0": x}, ["OUTPUT0"])
    np.testing.assert_allclose(got["OUTPUT0"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 6])
def test_savedmodel_outputs_equal_the_signature_called_directly(server, models, batch):
    x = inputs(batch, seed=batch)
    got = serve(server.port, "mlp_savedmodel", {"INPUT0": x},
                {"OUTPUT0": "FP32", "HIDDEN": "FP32"}, batch)
    signature = tf.saved_model.load(str(models / "mlp_savedmodel/1/model.savedmodel")) \
        .signatures["serving_default"]
    want = signature(INPUT0=tf.constant(x))
    np.testing.assert_allclose(got["OUTPUT0"], want["OUTPUT0"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["HIDDEN"], want["HIDDEN"].numpy(), rtol=1e-5, atol=1e-5)


def test_two_inputs_and_outputs_of_int32(server):
    a = np.arange(48, dtype=np.int32).reshape(3, 16)
    b = np.full((3, 16), 7, np.int32)
    got = serve(server.port, "add_sub_int32", {"INPUT0": a, "INPUT1": b},
                {"OUTPUT0": "INT32", "OUTPUT1": "INT32"}, 3)
    want = session_run(tm.graphdef_add_sub("int32"), {"INPUT0": a, "INPUT1": b},
                       ["OUTPUT0", "OUTPUT1"])
    np.testing.assert_array_equal(got["OUTPUT0"], want[0])
    np.testing.assert_array_equal(got["OUTPUT1"], want[1])


def test_string_tensors_cross_the_c_api(server):
    x = np.array([[b"abc", b"", b"x" * 300], [b"Hello", b"\xff\x00", b"tf"]], dtype=np.object_)
    got = serve(server.port, "strings", {"INPUT0": x}, {"OUTPUT0": "STRING", "OUTPUT1": "INT32"}, 2)
    upper, lengths = session_run(tm.graphdef_strings(), {"INPUT0": x}, ["OUTPUT0", "OUTPUT1"])
    assert got["OUTPUT0"] == list(upper.reshape(-1))
    np.testing.assert_array_equal(got["OUTPUT1"], lengths)


def test_dynamic_batching_gives_the_unbatched_answers(server):
    xs = [inputs(1, seed=100 + i) for i in range(24)]

    def call(i):
        return serve(server.port, "mlp_graphdef_batched", {"INPUT0": xs[i]}, {"OUTPUT0": "FP32"},
                     1)["OUTPUT0"]

    with ThreadPoolExecutor(12) as pool:
        batched = list(pool.map(call, range(len(xs))))
    for x, got in zip(xs, batched):
        (want,) = session_run(tm.graphdef_mlp(), {"INPUT0": x}, ["OUTPUT0"])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    version = get_status(server.port, "mlp_graphdef_batched") \
        .model_status["mlp_graphdef_batched"].version_status[1]
    assert version.model_inference_count == len(xs)
    assert version.model_execution_count < version.model_inference_count


def test_dynamic_batching_of_string_tensors_gives_the_unbatched_answers(server):
    rng = np.random.default_rng(7)
    xs = [np.array([[bytes(rng.integers(0, 256, rng.integers(0, 40)).astype(np.uint8))
                     for _ in range(3)]], dtype=np.object_) for _ in range(24)]

    def call(i):
        return serve(server.port, "strings_batched", {"INPUT0": xs[i]},
                     {"OUTPUT0": "STRING", "OUTPUT1": "INT32"}, 1)

    with ThreadPoolExecutor(12) as pool:
        batched = list(pool.map(call, range(len(xs))))
    for x, got in zip(xs, batched):
        upper, lengths = session_run(tm.graphdef_strings(), {"INPUT0": x}, ["OUTPUT0", "OUTPUT1"])
        assert got["OUTPUT0"] == list(upper.reshape(-1))
        np.testing.assert_array_equal(got["OUTPUT1"], lengths)
    version = get_status(server.port, "strings_batched") \
        .model_status["strings_batched"].version_status[1]
    assert version.model_execution_count < version.model_inference_count


def test_a_failing_run_fails_the_request_with_tensorflows_reason(server):
    header = request_header(1, [{"name": "INPUT0", "dims": [63]}], ["OUTPUT0"])
    result = infer(server.port, "mlp_variable", header, np.zeros(63, np.float32).tobytes())
    status = assert_error(result, Code.INTERNAL, "tensorflow")
    assert "63" in status.msg
    header = request_header(1, [{"name": "INPUT0", "dims": [64]}], ["OUTPUT0"])
    assert infer(server.port, "mlp_variable", header, inputs(1).tobytes())[0] == 200


@pytest.mark.parametrize("model, fragments", [
    ("wrong_type", ["INPUT0", "DT_FLOAT", "TYPE_FP64"]),
    ("wrong_signature", ["predict", "serving_default"]),
])
def test_a_model_that_does_not_match_its_config_is_unavailable_with_the_reason(
        server, model, fragments):
    version = get_status(server.port, model).model_status[model].version_status[1]
    assert version.ready_state == ss.MODEL_UNAVAILABLE
    for fragment in fragments:
        assert fragment in version.ready_state_reason.message
    assert_error(infer(server.port, model, request_header(1, ["INPUT0"]),
                       inputs(1).tobytes()), Code.UNAVAILABLE)
