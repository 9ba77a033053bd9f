"""Data types and the v1 wire encoding of tensors."""

from __future__ import annotations

import struct

import numpy as np

from pyserver.errors import invalid_arg
from pyserver.protos import model_config_pb2 as mc

# v1 DataType value -> numpy dtype. TYPE_STRING elements are bytes objects.
NUMPY_DTYPES: dict[int, np.dtype] = {
    mc.TYPE_BOOL: np.dtype(np.bool_),
    mc.TYPE_UINT8: np.dtype(np.uint8),
    mc.TYPE_UINT16: np.dtype(np.uint16),
    mc.TYPE_UINT32: np.dtype(np.uint32),
    mc.TYPE_UINT64: np.dtype(np.uint64),
    mc.TYPE_INT8: np.dtype(np.int8),
    mc.TYPE_INT16: np.dtype(np.int16),
    mc.TYPE_INT32: np.dtype(np.int32),
    mc.TYPE_INT64: np.dtype(np.int64),
    mc.TYPE_FP16: np.dtype(np.float16),
    mc.TYPE_FP32: np.dtype(np.float32),
    mc.TYPE_FP64: np.dtype(np.float64),
    mc.TYPE_STRING: np.dtype(np.object_),
}

# Types whose scores top-k classification accepts (facts §2.6).
CLASSIFIABLE = frozenset({
    mc.TYPE_UINT8, mc.TYPE_UINT16, mc.TYPE_UINT32, mc.TYPE_UINT64,
    mc.TYPE_INT8, mc.TYPE_INT16, mc.TYPE_INT32, mc.TYPE_INT64,
    mc.TYPE_FP32, mc.TYPE_FP64,
})

_LENGTH = struct.Struct("<I")


def type_name(data_type: int) -> str:
    return mc.DataType.Name(data_type)


def element_size(data_type: int) -> int:
    """Bytes per element; 0 for TYPE_STRING (variable size)."""
    if data_type == mc.TYPE_STRING:
        return 0
    return NUMPY_DTYPES[data_type].itemsize


def deserialize_strings(buffer: memoryview | bytes, count: int, name: str) -> np.ndarray:
    """Parses ``count`` length-prefixed elements (4-byte little-endian length,
    then the bytes) into a 1-D object array of bytes."""
    out = np.empty(count, dtype=np.object_)
    view = memoryview(buffer)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise invalid_arg(f"input '{name}': string data ends inside element {i}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise invalid_arg(f"input '{name}': string element {i} overruns the data")
        out[i] = bytes(view[offset:offset + length])
        offset += length
    if offset != len(view):
        raise invalid_arg(f"input '{name}': {len(view) - offset} bytes after the last string element")
    return out


def serialize_strings(array: np.ndarray) -> bytes:
    """Serializes an array of bytes/str elements, row-major, length-prefixed."""
    parts = []
    for item in array.reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
