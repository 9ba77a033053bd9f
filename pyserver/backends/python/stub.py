"""The stub process of one Python model instance.

Started by ``pyserver.backends.python`` as
``python -m pyserver.backends.python.stub CONTROL_FD IN_FD IN_SIZE OUT_FD OUT_SIZE``.
It loads the model file, then answers messages on the control socket until
told to finalize or the server goes away:

    ("initialize", model_file, args)      -> ("ok",) | ("error", message)
    ("execute", in_size, [(inputs, requested_outputs), ...])
        -> ("ok", out_size, [("tensors", descriptors) | ("error", code, message), ...])
         | ("error", message)             (execute raised, or answered wrongly)
    ("finalize",)                         -> ("ok",), then the process exits

Inputs are read-only views of the input region; outputs are copied into the
output region, which this process grows as needed (shared_memory.py).
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from pyserver.backends.python import triton_python_backend_utils as pb_utils
from pyserver.backends.python.shared_memory import SharedRegion


def load_model(model_file: str, args: dict):
    """Imports ``model_file`` and returns its initialised TritonPythonModel."""
    sys.modules.setdefault("triton_python_backend_utils", pb_utils)
    path = Path(model_file)
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("model", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["model"] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "TritonPythonModel"):
        raise AttributeError(f"{path.name} defines no class TritonPythonModel")
    model = module.TritonPythonModel()
    if hasattr(model, "initialize"):
        model.initialize(args)
    return model


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pb_utils.TritonModelException):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def execute(model, requests_in: list, inputs: SharedRegion, outputs: SharedRegion) -> tuple:
    requests = [
        pb_utils.InferenceRequest([pb_utils.Tensor(d[0], inputs.read(d, copy=False))
                                   for d in descriptors], requested_output_names=requested)
        for descriptors, requested in requests_in]
    try:
        responses = model.execute(requests)
    except Exception as exc:
        traceback.print_exc()
        return ("error", _describe(exc))
    if not isinstance(responses, (list, tuple)) or len(responses) != len(requests):
        count = len(responses) if isinstance(responses, (list, tuple)) else type(responses).__name__
        return ("error", f"execute returned {count} responses for {len(requests)} requests")
    tensors: list[tuple] = []
    spans = []
    for response in responses:
        if not isinstance(response, pb_utils.InferenceResponse):
            spans.append(("error", pb_utils.TritonError.INTERNAL,
                          f"execute returned a {type(response).__name__}, not an "
                          "InferenceResponse"))
        elif response.has_error():
            error = response.error()
            spans.append(("error", error.code(), error.message()))
        else:
            start = len(tensors)
            tensors.extend((t.name(), t.as_numpy()) for t in response.output_tensors())
            spans.append(("tensors", start, len(tensors)))
    try:
        descriptors = outputs.write(tensors)
    except Exception as exc:
        traceback.print_exc()
        return ("error", f"cannot return the outputs: {_describe(exc)}")
    answers = [span if span[0] == "error" else ("tensors", descriptors[span[1]:span[2]])
               for span in spans]
    return ("ok", outputs.size, answers)


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group; the server decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = Connection(int(argv[1]))
    inputs = SharedRegion(int(argv[2]), int(argv[3]))
    outputs = SharedRegion(int(argv[4]), int(argv[5]))
    _, model_file, args = control.recv()
    try:
        model = load_model(model_file, args)
    except BaseException as exc:
        traceback.print_exc()
        control.send(("error", _describe(exc)))
        return 1
    control.send(("ok",))
    while True:
        try:
            message = control.recv()
        except (EOFError, OSError):
            break  # the server is gone
        if message[0] == "finalize":
            break
        _, in_size, requests = message
        inputs.remap(in_size)
        control.send(execute(model, requests, inputs, outputs))
    try:
        if hasattr(model, "finalize"):
            model.finalize()
    except Exception:
        traceback.print_exc()
    try:
        control.send(("ok",))
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
