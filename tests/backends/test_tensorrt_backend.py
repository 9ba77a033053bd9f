"""TensorRT plans. What needs no GPU is tested everywhere: the plan file
chosen by compute capability, the checks of engine bindings against the
config, refusing CPU instances. Building a plan with TensorRT at test time and
serving it needs ``tensorrt``, cuda-python and a CUDA device; elsewhere those
tests are skipped with the reason."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from backend_helpers import Payload, platform_config, serve, write_version
from conftest import ServerProcess, get_status
from pyserver.backends import tensorrt_plan
from pyserver.backends.tensorrt_plan import EngineTensor, check_bindings, select_model_filename
from pyserver.errors import Code, ServerError
from pyserver.examples.store import tensor
from pyserver.protos import model_config_pb2 as mc
from pyserver.repository import config as config_module

ADD_SUB_IO = ([tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
              [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])])


def _gpu_unavailable() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed"
    try:
        cudart = tensorrt_plan._cudart()
    except ServerError:
        return "cuda-python is not installed"
    error, count = cudart.cudaGetDeviceCount()
    if int(error) != 0 or count == 0:
        return "no CUDA device"
    return None


GPU_UNAVAILABLE = _gpu_unavailable()
needs_gpu = pytest.mark.skipif(GPU_UNAVAILABLE is not None, reason=GPU_UNAVAILABLE or "")


def parse(text: str) -> mc.ModelConfig:
    return config_module.normalize(text_format.Parse(text, mc.ModelConfig()))


def add_sub_config(*extra: str, max_batch_size: int = 8) -> mc.ModelConfig:
    return parse(platform_config("add_sub", "tensorrt_plan", max_batch_size, *ADD_SUB_IO, *extra))


def add_sub_engine(batch_limit: int = 8, dtype: int = mc.TYPE_FP32) -> list[EngineTensor]:
    dynamic = (batch_limit, 16)
    return [EngineTensor("INPUT0", True, dtype, (-1, 16), dynamic),
            EngineTensor("INPUT1", True, dtype, (-1, 16), dynamic),
            EngineTensor("OUTPUT0", False, dtype, (-1, 16)),
            EngineTensor("OUTPUT1", False, dtype, (-1, 16))]


# -- plan file selection -------------------------------------------------------------

def test_the_plan_for_the_gpus_compute_capability_is_chosen():
    config = add_sub_config('cc_model_filenames { key: "7.5" value: "model_t4.plan" }',
                            'cc_model_filenames { key: "9.0" value: "model_h100.plan" }')
    assert select_model_filename(config, "7.5") == "model_t4.plan"
    assert select_model_filename(config, "9.0") == "model_h100.plan"


def test_a_gpu_without_its_own_plan_uses_the_default_file():
    config = add_sub_config('cc_model_filenames { key: "7.5" value: "model_t4.plan" }')
    assert select_model_filename(config, "8.6") == "model.plan"
    config.default_model_filename = "custom.plan"
    assert select_model_filename(config, "8.6") == "custom.plan"


# -- bindings ------------------------------------------------------------------------

def test_matching_bindings_pass():
    check_bindings(add_sub_config(), add_sub_engine())


def test_static_batch_dim_at_least_max_batch_size_passes():
    tensors = [EngineTensor(t.name, t.is_input, t.data_type, (8, 16)) for t in add_sub_engine()]
    check_bindings(add_sub_config(), tensors)


@pytest.mark.parametrize("tensors, fragments", [
    (add_sub_engine()[1:], ["no input 'INPUT0'", "INPUT1"]),
    ([*add_sub_engine()[:3], EngineTensor("OUT", False, mc.TYPE_FP32, (-1, 16))],
     ["no output 'OUTPUT1'", "OUT"]),
    (add_sub_engine(dtype=mc.TYPE_FP16), ["TYPE_FP16", "TYPE_FP32"]),
    ([EngineTensor("INPUT0", True, None, (-1, 16), (8, 16)), *add_sub_engine()[1:]],
     ["no v1 equivalent"]),
    (add_sub_engine(batch_limit=4), ["at most 4", "max_batch_size 8"]),
    ([EngineTensor("INPUT0", True, mc.TYPE_FP32, (-1, 15), (8, 15)), *add_sub_engine()[1:]],
     ["[-1, 15]", "[16]"]),
    ([EngineTensor("INPUT0", True, mc.TYPE_FP32, (16,)), *add_sub_engine()[1:]],
     ["[16]", "[batch]"]),
    ([*add_sub_engine(), EngineTensor("MASK", True, mc.TYPE_INT32, (-1, 1), (8, 1))],
     ["MASK", "not in the config"]),
])
def test_mismatched_bindings_are_refused_naming_the_tensor(tensors, fragments):
    with pytest.raises(ServerError) as refused:
        check_bindings(add_sub_config(), tensors)
    assert refused.value.code == Code.INVALID_ARG
    for fragment in fragments:
        assert fragment in refused.value.message


def test_config_dims_of_minus_one_accept_any_engine_dim():
    config = parse(platform_config("v", "tensorrt_plan", 0, [tensor("INPUT0", "FP32", [-1, 4])],
                                   [tensor("OUTPUT0", "FP32", [-1])]))
    check_bindings(config, [EngineTensor("INPUT0", True, mc.TYPE_FP32, (-1, 4), (9, 4)),
                            EngineTensor("OUTPUT0", False, mc.TYPE_FP32, (-1,))])


def test_reshape_gives_the_shape_the_engine_sees():
    config = parse(platform_config(
        "r", "tensorrt_plan", 8, ['{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] '
                                  'reshape: { shape: [ 4, 4 ] } }'],
        [tensor("OUTPUT0", "FP32", [16])]))
    check_bindings(config, [EngineTensor("INPUT0", True, mc.TYPE_FP32, (-1, 4, 4), (8, 4, 4)),
                            EngineTensor("OUTPUT0", False, mc.TYPE_FP32, (-1, 16))])


def test_cpu_instances_are_refused_before_tensorrt_is_needed(tmp_path):
    config = add_sub_config("instance_group [ { kind: KIND_CPU } ]")
    with pytest.raises(ServerError, match="GPUs only"):
        tensorrt_plan.load(config, tmp_path / "model.plan", config.instance_group[0], -1)


def test_a_plan_model_on_a_machine_without_gpu_is_unavailable_with_the_reason(tmp_path):
    if GPU_UNAVAILABLE is None:
        pytest.skip("a GPU exists here")
    store = tmp_path / "store"
    write_version(store, "add_sub", platform_config("add_sub", "tensorrt_plan", 8, *ADD_SUB_IO),
                  {"model.plan": b"not a plan"})
    server = ServerProcess(store, "--exit-on-error=false", workdir=tmp_path)
    try:
        version = get_status(server.port, "add_sub").model_status["add_sub"].version_status[1]
        assert version.ready_state_reason.message
        assert "GPU" in version.ready_state_reason.message
    finally:
        assert server.stop() == 0, server.log_text()


# -- on a GPU with TensorRT --------------------------------------------------------------

def build_add_sub_plan(max_batch: int = 8) -> bytes:
    """An engine for OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (FP32[16])."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    a = network.add_input("INPUT0", trt.float32, (-1, 16))
    b = network.add_input("INPUT1", trt.float32, (-1, 16))
    for name, operation in (("OUTPUT0", trt.ElementWiseOperation.SUM),
                            ("OUTPUT1", trt.ElementWiseOperation.SUB)):
        out = network.add_elementwise(a, b, operation).get_output(0)
        out.name = name
        network.mark_output(out)
    profile = builder.create_optimization_profile()
    for name in ("INPUT0", "INPUT1"):
        profile.set_shape(name, (1, 16), (max_batch, 16), (max_batch, 16))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    return bytes(builder.build_serialized_network(network, config))


@needs_gpu
def test_plan_runs_on_the_gpu_in_process(tmp_path):
    (tmp_path / "model.plan").write_bytes(build_add_sub_plan())
    config = add_sub_config("instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]")
    runtime = tensorrt_plan.load(config, tmp_path / "model.plan", config.instance_group[0], 0)
    try:
        for batch in (1, 5):
            a = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
            b = np.ones((batch, 16), np.float32)
            (result,) = runtime.execute([Payload({"INPUT0": a, "INPUT1": b},
                                                 ["OUTPUT0", "OUTPUT1"])])
            np.testing.assert_allclose(result["OUTPUT0"], a + b, rtol=1e-6)
            np.testing.assert_allclose(result["OUTPUT1"], a - b, rtol=1e-6)
    finally:
        runtime.close()


@needs_gpu
@pytest.mark.parametrize("batch", [1, 4])
def test_plan_served_with_the_file_for_this_gpu(tmp_path, batch):
    cudart = tensorrt_plan._cudart()
    cc = tensorrt_plan.compute_capability(cudart, 0)
    store = tmp_path / "store"
    write_version(store, "add_sub", platform_config(
        "add_sub", "tensorrt_plan", 8, *ADD_SUB_IO,
        f'cc_model_filenames {{ key: "{cc}" value: "this_gpu.plan" }}',
        "instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]"),
        {"this_gpu.plan": build_add_sub_plan(), "model.plan": b"not a plan"})
    server = ServerProcess(store, workdir=tmp_path)
    try:
        a = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
        b = np.full((batch, 16), 2, np.float32)
        got = serve(server.port, "add_sub", {"INPUT0": a, "INPUT1": b},
                    {"OUTPUT0": "FP32", "OUTPUT1": "FP32"}, batch)
        np.testing.assert_allclose(got["OUTPUT0"], a + b, rtol=1e-6)
        np.testing.assert_allclose(got["OUTPUT1"], a - b, rtol=1e-6)
    finally:
        assert server.stop() == 0, server.log_text()
