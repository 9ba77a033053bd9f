"""Server overhead per backend: v1 HTTP p50 of a model served, against the same model in-process.

One server holds a model per backend (one CPU instance, direct scheduling; ``mlp`` = FP32
64 → 128 → 32 perceptron where the platform allows, add/sub FP32[16] in numpy for the
Python model, the example 8×8 image classifier for NetDef), each requested at batch 1 and
8 over one connection (c=1). In this process, in the same alternating rounds:

- ``framework``: the framework's own call (onnxruntime ``run``, TensorFlow's Python
  ``Session.run`` / SavedModel signature, the TorchScript module under ``inference_mode``,
  the Python model's ``execute``, for NetDef the translated graph on onnxruntime);
- ``runtime``: pyserver's runtime for the platform called directly (``execute``; for Python
  models the round trip through the stub process). Native runtimes have no Python
  ``execute`` ("—" here): ``python -m perf ort-micro`` times their in-process call.

Overhead = server p50 − framework p50; medians of the rounds' p50s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..harness.frameworks import onnxruntime_session, tensorflow_session
from ..harness.load import v1_request
from ..harness.options import add_rounds
from ..harness.processes import pyserver
from ..harness.report import heading, table
from ..harness.rounds import Target, run_rounds
from ..harness.timing import median_call_us

MLP = (64, 128, 32)
BATCHES = (1, 8)


@dataclass
class Backend:
    platform: str
    make_inputs: Callable[[int], dict[str, np.ndarray]]
    outputs: list[str]
    call: Callable[[dict[str, np.ndarray]], object]


class Payload:
    """What a runtime's ``execute`` reads of a request."""

    def __init__(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> None:
        self.inputs = inputs
        self.outputs = outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_rounds(parser, rounds=3, seconds=3.0, warmup=1.0)


def write(root: Path, name: str, platform: str, io: tuple[list[str], list[str]],
          files: dict[str, bytes | Callable[[Path], object]]) -> Path:
    """The model's config and version 1, each file given as bytes or written by a callable."""
    lines = [f'name: "{name}"',
             'backend: "python"' if platform == "python" else f'platform: "{platform}"',
             "max_batch_size: 8", f"input [ {', '.join(io[0])} ]",
             f"output [ {', '.join(io[1])} ]", "instance_group [ { count: 1 kind: KIND_CPU } ]"]
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text("\n".join(lines) + "\n")
    for filename, data in files.items():
        if callable(data):
            data(root / name / "1" / filename)
        else:
            (root / name / "1" / filename).write_bytes(data)
    return root / name


def read_config(model_dir: Path):
    from google.protobuf import text_format

    from pyserver.protos import model_config_pb2 as mc
    from pyserver.repository import config as config_module

    return config_module.normalize(text_format.Parse((model_dir / "config.pbtxt").read_text(),
                                                     mc.ModelConfig()))


def mlp_inputs(name: str, rng: np.random.Generator) -> Callable[[int], dict[str, np.ndarray]]:
    return lambda b: {name: rng.random((b, MLP[0]), np.float32)}


def tensorflow_backends(root: Path, rng: np.random.Generator) -> dict[str, Backend]:
    import tensorflow as tf

    from pyserver.examples import tensorflow_models
    from pyserver.examples.store import tensor

    io = ([tensor("INPUT0", "FP32", [MLP[0]])], [tensor("OUTPUT0", "FP32", [MLP[2]])])
    graphdef = tensorflow_models.graphdef_mlp(*MLP)
    write(root, "graphdef", "tensorflow_graphdef", io, {"model.graphdef": graphdef})
    session = tensorflow_session(graphdef)
    saved = write(root, "savedmodel", "tensorflow_savedmodel", io, {
        "model.savedmodel": lambda p: tensorflow_models.savedmodel_mlp(p, *MLP)})
    signature = tf.saved_model.load(str(saved / "1/model.savedmodel")).signatures["serving_default"]
    return {
        "graphdef": Backend("tensorflow_graphdef", mlp_inputs("INPUT0", rng), ["OUTPUT0"],
                            lambda i: session.run(["OUTPUT0:0"], {"INPUT0:0": i["INPUT0"]})),
        "savedmodel": Backend("tensorflow_savedmodel", mlp_inputs("INPUT0", rng), ["OUTPUT0"],
                              lambda i: signature(INPUT0=tf.constant(i["INPUT0"]))["OUTPUT0"]
                              .numpy()),
    }


def torch_backend(root: Path, rng: np.random.Generator) -> Backend:
    import torch

    from pyserver.examples import torch_models
    from pyserver.examples.store import tensor

    io = ([tensor("INPUT__0", "FP32", [MLP[0]])], [tensor("OUTPUT__0", "FP32", [MLP[2]])])
    write(root, "torch", "pytorch_libtorch", io, {"model.pt": torch_models.mlp(*MLP)})
    torch.set_num_threads(1)
    module = torch.jit.load(str(root / "torch/1/model.pt"))

    def call(inputs: dict[str, np.ndarray]) -> object:
        with torch.inference_mode():
            return module(torch.from_numpy(inputs["INPUT__0"]))[0].numpy()

    return Backend("pytorch_libtorch", mlp_inputs("INPUT__0", rng), ["OUTPUT__0"], call)


def python_backend(root: Path, rng: np.random.Generator) -> Backend:
    from pyserver.backends.python import model_config_json
    from pyserver.backends.python import triton_python_backend_utils as pb_utils
    from pyserver.examples import python_models
    from pyserver.examples.store import tensor

    io = ([tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
          [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])])
    write(root, "python", "python", io, {"model.py": python_models.ADD_SUB.encode()})
    sys.modules.setdefault("triton_python_backend_utils", pb_utils)
    spec = importlib.util.spec_from_file_location("bench_model", root / "python/1/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": model_config_json(read_config(root / "python"))})

    def call(inputs: dict[str, np.ndarray]) -> object:
        request = pb_utils.InferenceRequest([pb_utils.Tensor(n, a) for n, a in inputs.items()])
        return model.execute([request])

    return Backend("python", lambda b: {"INPUT0": rng.random((b, 16), np.float32),
                                        "INPUT1": rng.random((b, 16), np.float32)},
                   ["OUTPUT0", "OUTPUT1"], call)


def onnx_backends(root: Path, rng: np.random.Generator) -> dict[str, Backend]:
    from pyserver.backends.caffe2_netdef import to_onnx
    from pyserver.examples import caffe2_models, onnx_models
    from pyserver.examples.store import tensor

    onnx = onnx_models.mlp(*MLP)
    write(root, "onnx", "onnxruntime_onnx",
          ([tensor("INPUT0", "FP32", [MLP[0]])], [tensor("OUTPUT0", "FP32", [MLP[2]])]),
          {"model.onnx": onnx})
    session = onnxruntime_session(onnx)
    predict, init = caffe2_models.classifier()
    write(root, "netdef", "caffe2_netdef",
          ([tensor("data", "FP32", [3, 8, 8])], [tensor("prob", "FP32", [10])]),
          {"model.netdef": predict, "init_model.netdef": init})
    netdef = onnxruntime_session(to_onnx(read_config(root / "netdef"),
                                         root / "netdef/1/model.netdef"))
    return {
        "onnx": Backend("onnxruntime_onnx", mlp_inputs("INPUT0", rng), ["OUTPUT0"],
                        lambda i: session.run(["OUTPUT0"], i)),
        "netdef": Backend("caffe2_netdef", lambda b: {"data": rng.random((b, 3, 8, 8),
                                                                         np.float32)},
                          ["prob"], lambda i: netdef.run(["prob"], i)),
    }


def backends(root: Path) -> dict[str, Backend]:
    rng = np.random.default_rng(0)
    found = onnx_backends(root, rng)
    found.update(tensorflow_backends(root, rng))
    found["torch"] = torch_backend(root, rng)
    found["python"] = python_backend(root, rng)
    return {name: found[name] for name in
            ("onnx", "graphdef", "savedmodel", "torch", "python", "netdef")}


def load_runtimes(store: Path, models: dict[str, Backend]):
    from pyserver import _core
    from pyserver.backends import load_runtime
    from pyserver.repository import config as config_module

    pool = _core.HostMemoryPool(64 << 20)
    runtimes = {}
    for name in models:
        config = read_config(store / name)
        runtimes[name] = load_runtime(config, config_module.model_path(store / name, 1, config),
                                      config.instance_group[0], -1, pool)
    return runtimes, _core.NativeRuntime


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(tempfile.mkdtemp(prefix="perf-backends-"))
    store = work / "store"
    models = backends(store)
    runtimes, native = load_runtimes(store, models)
    keys = [(name, batch) for name in models for batch in BATCHES]
    inputs = {(name, b): models[name].make_inputs(b) for name, b in keys}
    framework: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    runtime: dict[tuple[str, int], list[float]] = {key: [] for key in keys}

    def in_process(_round: int) -> None:
        for name, batch in keys:
            feeds = inputs[(name, batch)]
            framework[(name, batch)].append(
                median_call_us(lambda: models[name].call(feeds), args.seconds / 2))
            if not isinstance(runtimes[name], native):
                payload = Payload(feeds, models[name].outputs)
                runtime[(name, batch)].append(median_call_us(
                    lambda: runtimes[name].execute([payload]), args.seconds / 2))

    with pyserver(store, work) as server:
        targets = {key: Target(f"{key[0]} b{key[1]}", server.http_port,
                               v1_request("http", server.http_port, *key), server.pid)
                   for key in keys}
        run_rounds(list(targets.values()), [1], args.rounds, args.seconds, args.warmup,
                   in_process)
    for value in runtimes.values():
        value.close()
    print(heading(f"v1 HTTP, c=1, {args.rounds} alternating rounds x {args.seconds:g} s; "
                  f"medians of p50 µs"))
    rows = []
    for key in keys:
        fw, server_p50 = statistics.median(framework[key]), targets[key].median(1, "p50_us")
        rt = f"{statistics.median(runtime[key]):.0f}" if runtime[key] else "—"
        rows.append([key[0], models[key[0]].platform, key[1], f"{fw:.0f}", rt,
                     f"{server_p50:.0f}", f"{server_p50 - fw:.0f}"])
    print(table(["backend", "platform", "batch", "framework µs", "pyserver runtime µs",
                 "server p50 µs", "server − framework µs"], rows))
    return 0
