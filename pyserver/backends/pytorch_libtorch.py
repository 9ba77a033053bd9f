"""PyTorch TorchScript backend (platform ``pytorch_libtorch``, file ``model.pt``).

Inputs and outputs follow Triton's ``NAME__index`` convention: ``INPUT__0``
is the forward method's first argument, ``OUTPUT__1`` the second element of
the tuple it returns. Configs whose names do not all follow it are taken in
config order. Runs under ``torch.inference_mode()``; KIND_GPU instances run on
``cuda:N`` with a CUDA stream of their own.

torch's intra-op thread pool is process-wide: it is sized to the largest
``intra_op_thread_count`` parameter of the TorchScript models loaded (1 by
default, as for onnxruntime: instances give the parallelism).
"""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from pyserver.errors import Code, ServerError
from pyserver.protos import model_config_pb2 as mc

INTRA_OP_THREADS = "intra_op_thread_count"

_INDEXED = re.compile(r"^(.+)__(\d+)$")

_V1_TO_TORCH = {
    mc.TYPE_BOOL: torch.bool, mc.TYPE_UINT8: torch.uint8, mc.TYPE_INT8: torch.int8,
    mc.TYPE_INT16: torch.int16, mc.TYPE_INT32: torch.int32, mc.TYPE_INT64: torch.int64,
    mc.TYPE_FP16: torch.float16, mc.TYPE_FP32: torch.float32, mc.TYPE_FP64: torch.float64,
}

# Request tensors are views of the request body, which torch cannot write to;
# the model never writes its inputs under inference_mode.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

_threads_lock = threading.Lock()
_threads = 0


def _size_thread_pool(config: mc.ModelConfig) -> None:
    global _threads
    wanted = 1
    if INTRA_OP_THREADS in config.parameters:
        wanted = int(config.parameters[INTRA_OP_THREADS].string_value)
    with _threads_lock:
        if _threads == 0:
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass  # torch already ran parallel work in this process
        if wanted > _threads:
            torch.set_num_threads(wanted)
            _threads = wanted


def tensor_order(names: list[str]) -> list[int]:
    """Positions of ``names`` in the forward call (inputs) or in the returned
    tuple (outputs): their ``__index`` where every name has one, else config
    order. Raises on duplicate indices."""
    matches = [_INDEXED.match(n) for n in names]
    if not names or not all(matches):
        return list(range(len(names)))
    indices = [int(m.group(2)) for m in matches]
    if len(set(indices)) != len(indices):
        raise ServerError(Code.INVALID_ARG, f"tensor names {names} repeat an __index")
    return indices


class TorchScriptRuntime:
    """One TorchScript module on one device; one instance thread calls ``execute``."""

    def __init__(self, module, config: mc.ModelConfig, device: torch.device) -> None:
        self._module = module
        self._device = device
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        input_names = [i.name for i in config.input]
        positions = tensor_order(input_names)
        self._input_names = [name for _, name in sorted(zip(positions, input_names))]
        self._output_index = dict(zip((o.name for o in config.output),
                                      tensor_order([o.name for o in config.output])))

    def execute(self, payloads: list) -> list:
        return [self._run(p) for p in payloads]

    def _run(self, payload) -> dict:
        try:
            arrays = [payload.inputs[name] for name in self._input_names]
        except KeyError as exc:
            raise ServerError(Code.INVALID_ARG, f"input {exc} is missing") from None
        try:
            with torch.inference_mode():
                if self._stream is None:
                    values = self._forward([torch.from_numpy(a) for a in arrays])
                    return {name: self._numpy(values, name) for name in payload.outputs}
                with torch.cuda.stream(self._stream):
                    tensors = [torch.from_numpy(a).to(self._device, non_blocking=True)
                               for a in arrays]
                    values = [v.to("cpu") for v in self._forward(tensors)]
                self._stream.synchronize()
                return {name: self._numpy(values, name) for name in payload.outputs}
        except ServerError:
            raise
        except Exception as exc:  # TorchScript raises RuntimeError with a traceback
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise ServerError(Code.INTERNAL, f"pytorch: {lines[-1] if lines else exc}") from None

    def _forward(self, tensors: list) -> tuple:
        out = self._module(*tensors)
        if isinstance(out, torch.Tensor):
            return (out,)
        if isinstance(out, (tuple, list)):
            return tuple(out)
        raise ServerError(Code.INTERNAL, f"the model returned {type(out).__name__}; expected a "
                          "tensor or a tuple of tensors")

    def _numpy(self, values: tuple, name: str) -> np.ndarray:
        index = self._output_index[name]
        if index >= len(values):
            raise ServerError(Code.INTERNAL, f"output '{name}' is tensor {index} but the model "
                              f"returned {len(values)}")
        return np.ascontiguousarray(values[index].numpy())

    def close(self) -> None:
        self._module = None


def load(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
         device_id: int) -> TorchScriptRuntime:
    if not model_path.is_file():
        raise ServerError(Code.INVALID_ARG, f"model file '{model_path}' does not exist")
    for tensor in (*config.input, *config.output):
        if tensor.data_type not in _V1_TO_TORCH:
            raise ServerError(Code.INVALID_ARG, f"'{tensor.name}' is "
                              f"{mc.DataType.Name(tensor.data_type)}, which TorchScript models "
                              "do not take here")
    device = torch.device("cpu")
    if instance.kind == mc.ModelInstanceGroup.KIND_GPU:
        if not torch.cuda.is_available():
            raise ServerError(Code.INVALID_ARG, "KIND_GPU instance but torch sees no CUDA device")
        device = torch.device(f"cuda:{device_id}")
    _size_thread_pool(config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript, deprecated in 2.13
            module = torch.jit.load(str(model_path), map_location=device)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServerError(Code.INVALID_ARG,
                          f"torch could not load '{model_path}': {message}") from None
    module.eval()
    tensor_order([o.name for o in config.output])
    return TorchScriptRuntime(module, config, device)
