"""Protocol-neutral parts of an inference call: request headers from numpy
inputs, results from response headers and raw bytes. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from pyserver.client.errors import internal, invalid_arg
from pyserver.protos import api_pb2, model_config_pb2 as mc, server_status_pb2

Inputs = Union[Mapping[str, np.ndarray], Sequence[tuple[str, np.ndarray]]]
# Output name -> None (raw tensor) or k (top-k classes); or a list of names (raw).
Outputs = Union[Mapping[str, Union[int, None]], Sequence[str], None]

NUMPY_DTYPES: dict[int, np.dtype] = {
    mc.TYPE_BOOL: np.dtype(np.bool_), mc.TYPE_UINT8: np.dtype(np.uint8),
    mc.TYPE_UINT16: np.dtype(np.uint16), mc.TYPE_UINT32: np.dtype(np.uint32),
    mc.TYPE_UINT64: np.dtype(np.uint64), mc.TYPE_INT8: np.dtype(np.int8),
    mc.TYPE_INT16: np.dtype(np.int16), mc.TYPE_INT32: np.dtype(np.int32),
    mc.TYPE_INT64: np.dtype(np.int64), mc.TYPE_FP16: np.dtype(np.float16),
    mc.TYPE_FP32: np.dtype(np.float32), mc.TYPE_FP64: np.dtype(np.float64),
    mc.TYPE_STRING: np.dtype(object),
}


@dataclass(frozen=True)
class Class:
    """One classification result: index into the flattened output, score, label."""

    idx: int
    value: float
    label: str


@dataclass
class InferResult:
    """The outcome of one inference.

    ``raw[name]``: the whole batch as a numpy array (leading batch dim when
    the model batches); ``classes[name]``: per batch element, the top-k
    :class:`Class` list, best first. ``header`` is the InferResponseHeader.
    """

    model_name: str
    model_version: int
    batch_size: int
    request_id: int
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    classes: dict[str, list[list[Class]]] = field(default_factory=dict)
    header: api_pb2.InferResponseHeader | None = None

    def as_numpy(self, name: str) -> np.ndarray:
        """The raw output ``name``; InferenceServerException if absent."""
        if name not in self.raw:
            raise invalid_arg(f"no raw output '{name}' in the result")
        return self.raw[name]


@dataclass
class Prepared:
    """A request ready for the wire: header plus one buffer per input."""

    header: api_pb2.InferRequestHeader
    buffers: list[bytes]
    config: mc.ModelConfig


def model_config(status: server_status_pb2.ServerStatus, model: str) -> mc.ModelConfig:
    if model not in status.model_status:
        raise internal(f"status for model '{model}' has no entry for it")
    return status.model_status[model].config


def _serialize_strings(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts += (len(data).to_bytes(4, "little"), data)
    return b"".join(parts)


def prepare(config: mc.ModelConfig, inputs: Inputs, outputs: Outputs,
            batch_size: int | None, request_id: int) -> Prepared:
    """Build the InferRequestHeader and input buffers.

    The model's config decides batching: when ``max_batch_size > 0`` the
    leading dim of every input is the batch (all must agree; an explicit
    ``batch_size`` must equal it), otherwise inputs are full shapes and the
    batch size is 1. ``outputs=None`` asks for every output, raw.
    """
    items = list(inputs.items()) if isinstance(inputs, Mapping) else list(inputs)
    if not items:
        raise invalid_arg("no inputs given")
    batched = config.max_batch_size > 0
    header = api_pb2.InferRequestHeader(id=request_id)
    buffers = []
    leading = set()
    for name, value in items:
        array = np.asarray(value)
        if array.dtype.kind in "OUS":
            data = _serialize_strings(array)
        else:
            data = np.ascontiguousarray(array).tobytes()
        if batched:
            if array.ndim == 0:
                raise invalid_arg(f"input '{name}' needs a leading batch dimension")
            leading.add(array.shape[0])
            dims = array.shape[1:]
        else:
            dims = array.shape
        entry = header.input.add(name=name, dims=list(dims))
        if array.dtype.kind in "OUS":
            entry.batch_byte_size = len(data)
        buffers.append(data)
    if batched:
        if len(leading) != 1:
            raise invalid_arg(f"inputs disagree on the batch size (leading dims {sorted(leading)})")
        actual = leading.pop()
        if batch_size is not None and batch_size != actual:
            raise invalid_arg(f"batch_size {batch_size} but the inputs' leading dim is {actual}")
        header.batch_size = actual
    else:
        if batch_size not in (None, 1):
            raise invalid_arg(f"model '{config.name}' does not batch: batch_size must be 1")
        header.batch_size = 1
    if outputs is None:
        outputs = {o.name: None for o in config.output}
    elif not isinstance(outputs, Mapping):
        outputs = {name: None for name in outputs}
    for name, count in outputs.items():
        out = header.output.add(name=name)
        if count:
            out.cls.count = int(count)
    return Prepared(header, buffers, config)


def _decode_strings(data: bytes, count: int) -> np.ndarray:
    items, offset = [], 0
    for _ in range(count):
        size = int.from_bytes(data[offset:offset + 4], "little")
        items.append(bytes(data[offset + 4:offset + 4 + size]))
        offset += 4 + size
    return np.array(items, dtype=object)


def result(config: mc.ModelConfig, header: api_pb2.InferResponseHeader,
           raw_outputs: Mapping[str, bytes]) -> InferResult:
    """An InferResult from a response header and the raw bytes by output name."""
    dtypes = {o.name: o.data_type for o in config.output}
    res = InferResult(header.model_name, header.model_version, header.batch_size, header.id,
                      header=header)
    for output in header.output:
        if output.HasField("raw"):
            data_type = output.data_type or dtypes.get(output.name, mc.TYPE_INVALID)
            if data_type not in NUMPY_DTYPES:
                raise internal(f"output '{output.name}' has unknown data type {data_type}")
            shape = list(output.raw.dims)
            if config.max_batch_size > 0:
                shape = [header.batch_size] + shape
            data = raw_outputs.get(output.name, b"")
            if data_type == mc.TYPE_STRING:
                array = _decode_strings(data, int(np.prod(shape)))
            else:
                array = np.frombuffer(data, dtype=NUMPY_DTYPES[data_type])
            try:
                res.raw[output.name] = array.reshape(shape)
            except ValueError:
                raise internal(f"output '{output.name}': {len(data)} bytes do not fit shape "
                               f"{shape}") from None
        else:
            res.classes[output.name] = [
                [Class(c.idx, c.value, c.label) for c in batch.cls]
                for batch in output.batch_classes]
    return res
