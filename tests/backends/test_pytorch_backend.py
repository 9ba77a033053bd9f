"""TorchScript models, scripted with torch at test time, served through a
real server, against the same modules loaded and called by torch in this
process. The KIND_GPU path runs only where torch sees a CUDA device."""

from __future__ import annotations

import io
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from backend_helpers import Payload, platform_config, serve, write_version  # noqa: E402
from conftest import Code, ServerProcess, assert_error, get_status, infer, request_header  # noqa: E402
from pyserver.backends import pytorch_libtorch  # noqa: E402
from pyserver.examples import torch_models as tm  # noqa: E402
from pyserver.examples.store import tensor  # noqa: E402
from pyserver.protos import model_config_pb2 as mc  # noqa: E402
from pyserver.protos import server_status_pb2 as ss  # noqa: E402

MLP_IO = ([tensor("INPUT__0", "FP32", [64])],
          [tensor("OUTPUT__0", "FP32", [32]), tensor("OUTPUT__1", "FP32", [32])])
BATCHING = "dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 20000 }"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch") / "store"
    mlp = tm.mlp()
    write_version(root, "mlp", platform_config("mlp", "pytorch_libtorch", 8, *MLP_IO),
                  {"model.pt": mlp})
    write_version(root, "mlp_batched",
                  platform_config("mlp_batched", "pytorch_libtorch", 8, *MLP_IO, BATCHING,
                                  "instance_group [ { count: 2 kind: KIND_CPU } ]"),
                  {"model.pt": mlp})
    # Inputs listed out of order: __index decides the argument position.
    write_version(root, "add_sub_int64", platform_config(
        "add_sub_int64", "pytorch_libtorch", 8,
        [tensor("INPUT__1", "INT64", [16]), tensor("INPUT__0", "INT64", [16])],
        [tensor("OUTPUT__1", "INT64", [16]), tensor("OUTPUT__0", "INT64", [16])]),
        {"model.pt": tm.add_sub()})
    write_version(root, "not_torchscript", platform_config("not_torchscript", "pytorch_libtorch",
                                                           8, *MLP_IO),
                  {"model.pt": b"not a zip archive" * 4})
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    process = ServerProcess(models, "--exit-on-error=false",
                            workdir=tmp_path_factory.mktemp("torch-server"))
    yield process
    assert process.stop() == 0, process.log_text()


def direct(model: bytes, *args: np.ndarray) -> tuple[np.ndarray, ...]:
    """The TorchScript module loaded and called by torch: the reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(model))
    with torch.no_grad():
        out = module(*(torch.from_numpy(a) for a in args))
    return tuple(o.numpy() for o in (out if isinstance(out, tuple) else (out,)))


def inputs(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 64)).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 7])
def test_outputs_equal_the_module_called_directly(server, batch):
    x = inputs(batch, seed=batch)
    got = serve(server.port, "mlp", {"INPUT__0": x}, {"OUTPUT__0": "FP32", "OUTPUT__1": "FP32"},
                batch)
    logits, probabilities = direct(tm.mlp(), x)
    np.testing.assert_allclose(got["OUTPUT__0"], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["OUTPUT__1"], probabilities, rtol=1e-5, atol=1e-6)


def test_index_suffixes_place_arguments_and_results(server):
    a = np.arange(32, dtype=np.int64).reshape(2, 16)
    b = np.full((2, 16), 5, np.int64)
    got = serve(server.port, "add_sub_int64", {"INPUT__0": a, "INPUT__1": b},
                {"OUTPUT__0": "INT64", "OUTPUT__1": "INT64"}, 2)
    total, difference = direct(tm.add_sub(), a, b)
    np.testing.assert_array_equal(got["OUTPUT__0"], total)
    np.testing.assert_array_equal(got["OUTPUT__1"], difference)


def test_dynamic_batching_over_two_instances_gives_the_unbatched_answers(server):
    xs = [inputs(1, seed=200 + i) for i in range(24)]

    def call(i):
        return serve(server.port, "mlp_batched", {"INPUT__0": xs[i]}, {"OUTPUT__0": "FP32"},
                     1)["OUTPUT__0"]

    with ThreadPoolExecutor(12) as pool:
        batched = list(pool.map(call, range(len(xs))))
    for x, got in zip(xs, batched):
        np.testing.assert_allclose(got, direct(tm.mlp(), x)[0], rtol=1e-5, atol=1e-5)
    version = get_status(server.port, "mlp_batched").model_status["mlp_batched"].version_status[1]
    assert version.model_inference_count == len(xs)
    assert version.model_execution_count < version.model_inference_count


def test_a_failing_forward_fails_the_request_with_torchs_reason(server, models):
    config = mc.ModelConfig(name="mlp", max_batch_size=8)
    config.input.add(name="INPUT__0", data_type=mc.TYPE_FP32, dims=[-1])
    config.output.add(name="OUTPUT__0", data_type=mc.TYPE_FP32, dims=[32])
    runtime = pytorch_libtorch.load(config, models / "mlp/1/model.pt",
                                    mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU), -1)
    with pytest.raises(Exception) as failure:
        runtime.execute([Payload({"INPUT__0": np.zeros((1, 63), np.float32)}, ["OUTPUT__0"])])
    assert failure.value.code == Code.INTERNAL and "63" in failure.value.message
    runtime.close()


def test_a_file_that_is_not_torchscript_is_unavailable_with_the_reason(server):
    version = get_status(server.port, "not_torchscript") \
        .model_status["not_torchscript"].version_status[1]
    assert version.ready_state == ss.MODEL_UNAVAILABLE
    assert "model.pt" in version.ready_state_reason.message
    assert_error(infer(server.port, "not_torchscript", request_header(1, ["INPUT__0"]),
                       inputs(1).tobytes()), Code.UNAVAILABLE)


@pytest.mark.parametrize("names, order", [
    (["INPUT__1", "INPUT__0", "INPUT__2"], [1, 0, 2]),
    (["x", "y"], [0, 1]),
    (["INPUT__0", "y"], [0, 1]),
])
def test_tensor_order_follows_index_suffixes_else_config_order(names, order):
    assert pytorch_libtorch.tensor_order(names) == order


def test_repeated_index_suffixes_are_refused():
    with pytest.raises(Exception, match="repeat"):
        pytorch_libtorch.tensor_order(["INPUT__0", "OTHER__0"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_instance_equals_cpu(models):
    config = mc.ModelConfig(name="mlp", max_batch_size=8)
    config.input.add(name="INPUT__0", data_type=mc.TYPE_FP32, dims=[64])
    config.output.add(name="OUTPUT__0", data_type=mc.TYPE_FP32, dims=[32])
    gpu = pytorch_libtorch.load(config, models / "mlp/1/model.pt",
                                mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU), 0)
    x = inputs(4)
    (got,) = gpu.execute([Payload({"INPUT__0": x}, ["OUTPUT__0"])])
    np.testing.assert_allclose(got["OUTPUT__0"], direct(tm.mlp(), x)[0], rtol=1e-4, atol=1e-4)
    gpu.close()
