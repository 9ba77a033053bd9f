"""TensorRT backend (platform ``tensorrt_plan``, file ``model.plan``).

Written against TensorRT's documented Python API (``IRuntime.
deserialize_cuda_engine``, ``ICudaEngine.create_execution_context``, the
named-tensor calls ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``) and cuda-python's runtime bindings for streams and
memory. It is imported only when a ``tensorrt_plan`` model loads, and loads
only where ``tensorrt`` and ``cuda-python`` import and a GPU exists.

Per instance: one execution context and one CUDA stream on the instance's
GPU, device buffers and pinned host staging buffers that grow to the largest
batch seen. The plan file is ``cc_model_filenames["<major>.<minor>"]`` for the
GPU's compute capability where the config names one, else
``default_model_filename``.

Not verified on a GPU here (no TensorRT in this environment): the pure parts
(file selection, binding checks) have unit tests; the rest is exercised only
where tests find ``tensorrt`` and a CUDA device.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyserver.errors import Code, ServerError
from pyserver.protos import model_config_pb2 as mc

# trt.DataType names -> v1 data types.
TRT_TO_V1 = {"FLOAT": mc.TYPE_FP32, "HALF": mc.TYPE_FP16, "INT8": mc.TYPE_INT8,
             "INT32": mc.TYPE_INT32, "INT64": mc.TYPE_INT64, "BOOL": mc.TYPE_BOOL,
             "UINT8": mc.TYPE_UINT8}
V1_TO_NUMPY = {mc.TYPE_FP32: np.float32, mc.TYPE_FP16: np.float16, mc.TYPE_INT8: np.int8,
               mc.TYPE_INT32: np.int32, mc.TYPE_INT64: np.int64, mc.TYPE_BOOL: np.bool_,
               mc.TYPE_UINT8: np.uint8}


@dataclass(frozen=True)
class EngineTensor:
    """One I/O tensor of an engine: name, direction, v1 type (None: no v1
    equivalent), shape with -1 for dynamic dims, and for inputs the largest
    shape the engine's first optimisation profile admits (None: static)."""

    name: str
    is_input: bool
    data_type: int | None
    shape: tuple[int, ...]
    max_shape: tuple[int, ...] | None = None


def select_model_filename(config: mc.ModelConfig, compute_capability: str) -> str:
    """The plan file for a GPU of ``compute_capability`` ("major.minor")."""
    return config.cc_model_filenames.get(compute_capability, config.default_model_filename)


def check_bindings(config: mc.ModelConfig, tensors: list[EngineTensor]) -> None:
    """Config inputs/outputs must be the engine's, with the same types and
    compatible shapes; the engine must take the config's max batch size.
    Raises INVALID_ARG naming the first mismatch."""
    by_name = {t.name: t for t in tensors}
    batched = config.max_batch_size > 0
    config_names = set()
    for kind, entries, is_input in (("input", config.input, True),
                                    ("output", config.output, False)):
        for entry in entries:
            config_names.add(entry.name)
            tensor = by_name.get(entry.name)
            if tensor is None or tensor.is_input != is_input:
                names = sorted(t.name for t in tensors if t.is_input == is_input)
                raise ServerError(Code.INVALID_ARG, f"the plan has no {kind} '{entry.name}'; "
                                  f"its {kind}s are {', '.join(names)}")
            if tensor.data_type != entry.data_type:
                found = mc.DataType.Name(tensor.data_type) if tensor.data_type else "a type " \
                    "with no v1 equivalent"
                raise ServerError(Code.INVALID_ARG, f"{kind} '{entry.name}' is {found} in the "
                                  f"plan but {mc.DataType.Name(entry.data_type)} in the config")
            _check_shape(kind, entry, tensor, batched, config.max_batch_size)
    missing = [t.name for t in tensors if t.is_input and t.name not in config_names]
    if missing:
        raise ServerError(Code.INVALID_ARG, f"the plan's inputs {', '.join(missing)} are not "
                          "in the config")


def _check_shape(kind: str, entry, tensor: EngineTensor, batched: bool,
                 max_batch_size: int) -> None:
    dims = list(entry.reshape.shape) if entry.HasField("reshape") else list(entry.dims)
    expected = ([-1] if batched else []) + dims
    if len(tensor.shape) != len(expected):
        raise ServerError(Code.INVALID_ARG, f"{kind} '{entry.name}' has shape "
                          f"{list(tensor.shape)} in the plan; the config implies "
                          f"{'[batch] + ' if batched else ''}{dims}")
    for got, want in zip(tensor.shape[1:] if batched else tensor.shape, dims):
        if got != -1 and want != -1 and got != want:
            raise ServerError(Code.INVALID_ARG, f"{kind} '{entry.name}' has shape "
                              f"{list(tensor.shape)} in the plan but dims {dims} in the config")
    if batched and tensor.is_input:
        limit = tensor.max_shape[0] if tensor.max_shape else tensor.shape[0]
        if limit != -1 and limit < max_batch_size:
            raise ServerError(Code.INVALID_ARG, f"input '{entry.name}' takes batches of at most "
                              f"{limit} in the plan, less than max_batch_size {max_batch_size}")


# -- CUDA and TensorRT, only where they exist ---------------------------------------------

def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise ServerError(Code.UNAVAILABLE, "cuda-python is not installed "
                              "(pip install 'pyserver[tensorrt]')") from None
    return cudart


def _check(result, what: str):
    """cuda-python calls return (error, values...); raise on an error."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ServerError(Code.INTERNAL, f"{what} failed: {error}")
    return values[0] if len(values) == 1 else values


def compute_capability(cudart, device_id: int) -> str:
    major = _check(cudart.cudaDeviceGetAttribute(
        cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device_id), "compute capability")
    minor = _check(cudart.cudaDeviceGetAttribute(
        cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device_id), "compute capability")
    return f"{major}.{minor}"


_logger = None
_logger_lock = threading.Lock()


def _trt_logger(trt):
    global _logger
    with _logger_lock:
        if _logger is None:
            _logger = trt.Logger(trt.Logger.WARNING)
        return _logger


def engine_tensors(trt, engine) -> list[EngineTensor]:
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(engine.get_tensor_shape(name))
        max_shape = None
        if is_input and -1 in shape and engine.num_optimization_profiles > 0:
            max_shape = tuple(engine.get_tensor_profile_shape(name, 0)[2])
        tensors.append(EngineTensor(name, is_input,
                                    TRT_TO_V1.get(engine.get_tensor_dtype(name).name),
                                    shape, max_shape))
    return tensors


class _Buffer:
    """A device buffer and its pinned host twin, grown on demand."""

    def __init__(self, cudart) -> None:
        self._cudart = cudart
        self.size = 0
        self.device = 0
        self.host = 0

    def reserve(self, nbytes: int) -> None:
        if nbytes <= self.size:
            return
        self.free()
        size = max(nbytes, 256)
        self.device = _check(self._cudart.cudaMalloc(size), "cudaMalloc")
        self.host = _check(self._cudart.cudaMallocHost(size), "cudaMallocHost")
        self.size = size

    def free(self) -> None:
        if self.size:
            self._cudart.cudaFree(self.device)
            self._cudart.cudaFreeHost(self.host)
            self.size = 0


class TensorRTRuntime:
    """One execution context and CUDA stream; one instance thread calls ``execute``."""

    def __init__(self, cudart, engine, context, stream, device_id: int,
                 tensors: list[EngineTensor]) -> None:
        self._cudart = cudart
        self._engine = engine
        self._context = context
        self._stream = stream
        self._device_id = device_id
        self._inputs = [t for t in tensors if t.is_input]
        self._outputs = [t for t in tensors if not t.is_input]
        self._buffers = {t.name: _Buffer(cudart) for t in tensors}

    def execute(self, payloads: list) -> list:
        return [self._run(p) for p in payloads]

    def _run(self, payload) -> dict:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaSetDevice(self._device_id), "cudaSetDevice")
        for tensor in self._inputs:
            array = np.ascontiguousarray(payload.inputs[tensor.name])
            if not self._context.set_input_shape(tensor.name, array.shape):
                raise ServerError(Code.INVALID_ARG, f"input '{tensor.name}' shape "
                                  f"{list(array.shape)} is outside the plan's profile")
            buffer = self._buffers[tensor.name]
            buffer.reserve(array.nbytes)
            ctypes.memmove(buffer.host, array.ctypes.data, array.nbytes)
            _check(cudart.cudaMemcpyAsync(buffer.device, buffer.host, array.nbytes, h2d,
                                          self._stream), "cudaMemcpyAsync")
            self._context.set_tensor_address(tensor.name, buffer.device)
        shapes = {}
        for tensor in self._outputs:
            shape = tuple(self._context.get_tensor_shape(tensor.name))
            dtype = np.dtype(V1_TO_NUMPY.get(tensor.data_type, np.uint8))
            shapes[tensor.name] = (shape, dtype)
            buffer = self._buffers[tensor.name]
            buffer.reserve(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
            self._context.set_tensor_address(tensor.name, buffer.device)
        if not self._context.execute_async_v3(self._stream):
            raise ServerError(Code.INTERNAL, "tensorrt: execute_async_v3 failed")
        for name in payload.outputs:
            shape, dtype = shapes[name]
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            buffer = self._buffers[name]
            _check(cudart.cudaMemcpyAsync(buffer.host, buffer.device, nbytes, d2h, self._stream),
                   "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        result = {}
        for name in payload.outputs:
            shape, dtype = shapes[name]
            out = np.empty(shape, dtype)
            ctypes.memmove(out.ctypes.data, self._buffers[name].host, out.nbytes)
            result[name] = out
        return result

    def close(self) -> None:
        if self._context is None:
            return
        self._cudart.cudaSetDevice(self._device_id)
        self._cudart.cudaStreamSynchronize(self._stream)
        for buffer in self._buffers.values():
            buffer.free()
        self._cudart.cudaStreamDestroy(self._stream)
        self._context = None
        self._engine = None


def load(config: mc.ModelConfig, model_path: Path, instance: mc.ModelInstanceGroup,
         device_id: int) -> TensorRTRuntime:
    if instance.kind != mc.ModelInstanceGroup.KIND_GPU:
        raise ServerError(Code.INVALID_ARG, "tensorrt_plan models run on GPUs only; instance "
                          f"group '{instance.name}' is {mc.ModelInstanceGroup.Kind.Name(instance.kind)}")
    try:
        import tensorrt as trt
    except ImportError:
        raise ServerError(Code.UNAVAILABLE, "tensorrt is not installed") from None
    cudart = _cudart()
    _check(cudart.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
    plan = model_path.parent / select_model_filename(config, compute_capability(cudart, device_id))
    if not plan.is_file():
        raise ServerError(Code.INVALID_ARG, f"model file '{plan}' does not exist")
    engine = trt.Runtime(_trt_logger(trt)).deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise ServerError(Code.INVALID_ARG, f"tensorrt could not deserialize '{plan}' (built "
                          "for another TensorRT version or GPU?)")
    tensors = engine_tensors(trt, engine)
    check_bindings(config, tensors)
    context = engine.create_execution_context()
    if context is None:
        raise ServerError(Code.INVALID_ARG, "tensorrt could not create an execution context")
    stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
    return TensorRTRuntime(cudart, engine, context, stream, device_id, tensors)
