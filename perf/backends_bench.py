"""Server overhead per backend: v1 HTTP p50 latency of a model served by
pyserver, against the same model run in this process, in alternating rounds.

    python perf/backends_bench.py --rounds 3 --seconds 3

For each backend one model (``mlp`` = FP32 64 -> 128 -> 32 perceptron where
the platform allows; the Python model is add/sub FP32[16] in numpy; the
NetDef model is the example image classifier), at batch 1 and 8, one
instance, direct scheduling, one client connection (c=1). In-process:

- ``framework``: the framework's own call (onnxruntime ``run``, TensorFlow's
  Python ``Session.run`` / SavedModel signature, the TorchScript module under
  ``inference_mode``, the Python model's ``execute``, and for NetDef the
  translated graph on onnxruntime);
- ``backend``: pyserver's runtime for that platform called directly
  (``runtime.execute``): for Python models
  the round trip through the stub process. Native runtimes (C++, e.g. ONNX
  Runtime through its C API) have no Python ``execute``: "—" here, and
  ``perf/ort_runtime_micro.py`` measures their in-process call.

Overhead = server p50 - framework p50. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_http_load as load  # noqa: E402
from v1_http_bench import process  # noqa: E402

from google.protobuf import text_format  # noqa: E402

from pyserver import _core  # noqa: E402
from pyserver.backends import load_runtime  # noqa: E402
from pyserver.backends.python import triton_python_backend_utils as pb_utils  # noqa: E402
from pyserver.examples import caffe2_models, onnx_models, python_models  # noqa: E402
from pyserver.examples import tensorflow_models, torch_models  # noqa: E402
from pyserver.examples.store import tensor  # noqa: E402
from pyserver.protos import model_config_pb2 as mc  # noqa: E402
from pyserver.repository import config as config_module  # noqa: E402

MLP = (64, 128, 32)
MLP_IO = ([tensor("INPUT0", "FP32", [64])], [tensor("OUTPUT0", "FP32", [32])])


class Payload:
    def __init__(self, inputs: dict, outputs: list[str]) -> None:
        self.inputs = inputs
        self.outputs = outputs


def write(root: pathlib.Path, name: str, platform_name: str, io, files: dict) -> pathlib.Path:
    lines = [f'name: "{name}"',
             'backend: "python"' if platform_name == "python" else f'platform: "{platform_name}"',
             "max_batch_size: 8", f"input [ {', '.join(io[0])} ]",
             f"output [ {', '.join(io[1])} ]", "instance_group [ { count: 1 kind: KIND_CPU } ]"]
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text("\n".join(lines) + "\n")
    for filename, data in files.items():
        path = root / name / "1" / filename
        if callable(data):
            data(path)
        elif isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    return root / name


def frameworks(root: pathlib.Path) -> dict:
    """name -> (platform, make_inputs(batch), outputs, framework_call(inputs))."""
    import onnxruntime as ort
    import tensorflow as tf
    import torch

    rng = np.random.default_rng(0)
    models = {}

    onnx = onnx_models.mlp(*MLP)
    write(root, "onnx", "onnxruntime_onnx", MLP_IO, {"model.onnx": onnx})
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    models["onnx"] = ("onnxruntime_onnx", lambda b: {"INPUT0": rng.random((b, 64), np.float32)},
                      ["OUTPUT0"], lambda i: session.run(["OUTPUT0"], i))

    graphdef = tensorflow_models.graphdef_mlp(*MLP)
    write(root, "graphdef", "tensorflow_graphdef", MLP_IO, {"model.graphdef": graphdef})
    graph = tf.Graph()
    with graph.as_default():
        definition = tf.compat.v1.GraphDef()
        definition.ParseFromString(graphdef)
        tf.import_graph_def(definition, name="")
    tf_session = tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=1, inter_op_parallelism_threads=1,
        use_per_session_threads=True))
    models["graphdef"] = ("tensorflow_graphdef", models["onnx"][1], ["OUTPUT0"],
                          lambda i: tf_session.run(["OUTPUT0:0"], {"INPUT0:0": i["INPUT0"]}))

    saved = write(root, "savedmodel", "tensorflow_savedmodel", MLP_IO, {
        "model.savedmodel": lambda p: tensorflow_models.savedmodel_mlp(p, *MLP)})
    signature = tf.saved_model.load(str(saved / "1/model.savedmodel")).signatures["serving_default"]
    models["savedmodel"] = ("tensorflow_savedmodel", models["onnx"][1], ["OUTPUT0"],
                            lambda i: signature(INPUT0=tf.constant(i["INPUT0"]))["OUTPUT0"].numpy())

    torch_io = ([tensor("INPUT__0", "FP32", [64])], [tensor("OUTPUT__0", "FP32", [32])])
    scripted = torch_models.mlp(*MLP)
    write(root, "torch", "pytorch_libtorch", torch_io, {"model.pt": scripted})
    torch.set_num_threads(1)
    module = torch.jit.load(str(root / "torch/1/model.pt"))

    def torch_call(i):
        with torch.inference_mode():
            return module(torch.from_numpy(i["INPUT__0"]))[0].numpy()

    models["torch"] = ("pytorch_libtorch",
                       lambda b: {"INPUT__0": rng.random((b, 64), np.float32)}, ["OUTPUT__0"],
                       torch_call)

    add_io = ([tensor("INPUT0", "FP32", [16]), tensor("INPUT1", "FP32", [16])],
              [tensor("OUTPUT0", "FP32", [16]), tensor("OUTPUT1", "FP32", [16])])
    write(root, "python", "python", add_io, {"model.py": python_models.ADD_SUB})
    sys.modules.setdefault("triton_python_backend_utils", pb_utils)
    spec = importlib.util.spec_from_file_location("bench_model", root / "python/1/model.py")
    python_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(python_module)
    python_model = python_module.TritonPythonModel()
    from pyserver.backends.python import model_config_json
    python_model.initialize({"model_config": model_config_json(
        read_config(root / "python"))})

    def python_call(i):
        request = pb_utils.InferenceRequest([pb_utils.Tensor(n, a) for n, a in i.items()])
        return python_model.execute([request])

    models["python"] = ("python", lambda b: {"INPUT0": rng.random((b, 16), np.float32),
                                             "INPUT1": rng.random((b, 16), np.float32)},
                        ["OUTPUT0", "OUTPUT1"], python_call)

    predict, init = caffe2_models.classifier()
    write(root, "netdef", "caffe2_netdef",
          ([tensor("data", "FP32", [3, 8, 8])], [tensor("prob", "FP32", [10])]),
          {"model.netdef": predict, "init_model.netdef": init})
    from pyserver.backends.caffe2_netdef import to_onnx
    netdef_session = ort.InferenceSession(
        to_onnx(read_config(root / "netdef"), root / "netdef/1/model.netdef"), options,
        providers=["CPUExecutionProvider"])
    models["netdef"] = ("caffe2_netdef",
                        lambda b: {"data": rng.random((b, 3, 8, 8), np.float32)}, ["prob"],
                        lambda i: netdef_session.run(["prob"], i))
    return models


def read_config(model_dir: pathlib.Path) -> mc.ModelConfig:
    return config_module.normalize(text_format.Parse((model_dir / "config.pbtxt").read_text(),
                                                     mc.ModelConfig()))


def p50_us(call, seconds: float) -> float:
    for _ in range(50):
        call()
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--port", type=int, default=18900)
    args = p.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-backends-"))
    store = work / "store"
    models = frameworks(store)
    runtimes = {}
    pool = _core.HostMemoryPool(64 << 20)
    for name, (platform_name, *_rest) in models.items():
        config = read_config(store / name)
        runtimes[name] = load_runtime(config, config_module.model_path(store / name, 1, config),
                                      config.instance_group[0], -1, pool)
    batches = (1, 8)
    command = [sys.executable, "-m", "pyserver", f"--model-store={store}",
               "--http-address=127.0.0.1", f"--http-port={args.port}", "--repository-poll-secs=0"]
    rows: dict[tuple, dict[str, list[float]]] = {}
    with process(command, f"http://127.0.0.1:{args.port}/api/health/ready", work / "server.log"):
        requests = {(m, b): load.build_request("127.0.0.1", args.port, m, b)
                    for m in models for b in batches}
        for _ in range(args.rounds):
            for (name, batch), request in requests.items():
                _, make_inputs, outputs, direct = models[name]
                inputs = make_inputs(batch)
                row = rows.setdefault((name, batch), {"server": [], "framework": [],
                                                      "backend": []})
                row["server"].append(load.measure("127.0.0.1", args.port, request, 1,
                                                  args.seconds, args.warmup, 1)["p50_us"])
                row["framework"].append(p50_us(lambda: direct(inputs), args.seconds / 2))
                payload = Payload(inputs, outputs)
                if isinstance(runtimes[name], _core.NativeRuntime):
                    row["backend"].append(float("nan"))
                else:
                    row["backend"].append(p50_us(lambda: runtimes[name].execute([payload]),
                                                 args.seconds / 2))
    for runtime in runtimes.values():
        runtime.close()
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {os.cpu_count()} cpus; v1 HTTP, "
          f"c=1, {args.rounds} alternating rounds x {args.seconds:.0f} s; medians of p50 µs")
    print("| backend | platform | batch | framework in-process | pyserver runtime in-process "
          "| server | server overhead |")
    print("|---|---|---|---|---|---|---|")
    for (name, batch), row in rows.items():
        framework, backend, server = (statistics.median(row[k])
                                      for k in ("framework", "backend", "server"))
        backend_text = "—" if backend != backend else f"{backend:.0f}"
        print(f"| {name} | {models[name][0]} | {batch} | {framework:.0f} | {backend_text} | "
              f"{server:.0f} | {server - framework:.0f} |")


if __name__ == "__main__":
    main()
