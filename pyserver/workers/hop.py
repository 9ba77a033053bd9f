"""The records that carry requests to the engine and responses back.

A record is a 4-byte little-endian header length, a ``marshal`` header
(plain tuples, strings, numbers: no pickling, no objects), then the tensor
bytes back to back in the order the header lists them. The record's memory
is the ring's; a decoder copies the tensor bytes out once, so the ring
space is free as soon as the record is decoded.
"""

from __future__ import annotations

import marshal
import struct
from typing import Any

import numpy as np

from pyserver import tensors
from pyserver.api.request import InferenceRequest, InferInput, RequestedOutput
from pyserver.api.response import Class, InferenceResponse, InferOutput
from pyserver.errors import Code, ServerError
from pyserver.shared_memory import SharedMemoryRef

_HEAD = struct.Struct("<I")

INFER = 1
CANCEL = 2

# How an input's data travels: none (the request's input_data has it),
# raw bytes in the record, a numpy array in the record, or a plain value
# (JSON data) in the header.
_NO_DATA, _BYTES, _ARRAY, _VALUE = range(4)
_BUFFER_TYPES = (bytes, bytearray, memoryview)
_MARSHALABLE = (int, float, str, bytes, bool, type(None), tuple, list, dict)


def _nbytes(buffer) -> int:
    return buffer.nbytes if type(buffer) is memoryview else len(buffer)


def _ref(ref: SharedMemoryRef | None) -> tuple | None:
    return None if ref is None else (ref.region, ref.offset, ref.byte_size)


def _unref(ref: tuple | None) -> SharedMemoryRef | None:
    return None if ref is None else SharedMemoryRef(*ref)


def _record(header: tuple, buffers: list) -> tuple[list, int]:
    try:
        head = marshal.dumps(header)
    except ValueError as exc:  # something no plain type: a fault of the front end
        raise ServerError(Code.INTERNAL, "internal error") from exc
    parts = [_HEAD.pack(len(head)), head, *buffers]
    return parts, _HEAD.size + len(head) + sum(_nbytes(b) for b in buffers)


def _split(record: memoryview) -> tuple[Any, memoryview]:
    (size,) = _HEAD.unpack_from(record, 0)
    end = _HEAD.size + size
    return marshal.loads(record[_HEAD.size:end]), record[end:]


# -- requests (worker -> engine) ----------------------------------------------------

def encode_request(ticket: int, request: InferenceRequest) -> tuple[list, int]:
    """(parts, size) of the INFER record of ``request``."""
    buffers: list = []
    inputs = []
    for given in request.inputs:
        data = given.data
        if data is None:
            inputs.append((given.name, given.datatype, given.shape, given.byte_size,
                           _ref(given.shared_memory), _NO_DATA, None))
        elif isinstance(data, _BUFFER_TYPES):
            buffers.append(data)
            inputs.append((given.name, given.datatype, given.shape, given.byte_size,
                           _ref(given.shared_memory), _BYTES, _nbytes(data)))
        elif isinstance(data, np.ndarray) and data.dtype != np.object_:
            array = np.ascontiguousarray(data)
            buffers.append(memoryview(array).cast("B") if array.ndim else array.tobytes())
            inputs.append((given.name, given.datatype, given.shape, given.byte_size,
                           _ref(given.shared_memory), _ARRAY,
                           (array.dtype.str, array.shape, array.nbytes)))
        else:
            value = data.tolist() if isinstance(data, np.ndarray) else data
            inputs.append((given.name, given.datatype, given.shape, given.byte_size,
                           _ref(given.shared_memory), _VALUE, value))
    source = request.input_data
    if source is None:
        input_data = None
    elif isinstance(source, _BUFFER_TYPES):
        buffers.append(source)
        input_data = _nbytes(source)
    else:
        listed = list(source)
        buffers.extend(listed)
        input_data = tuple(_nbytes(b) for b in listed)
    outputs = tuple((o.name, o.classification, _ref(o.shared_memory)) for o in request.outputs)
    signature = request.signature
    if signature is not None and not isinstance(signature, _MARSHALABLE):
        signature = None
    header = (INFER, ticket, request.model, request.version, request.id, request.priority,
              request.timeout_us, request.batch_size, request.parameters, signature,
              request.shared_memory, request.sequence_id, request.sequence_start,
              request.sequence_end, tuple(inputs), input_data, outputs)
    try:
        return _record(header, buffers)
    except ServerError:
        if signature is None:
            raise
        return _record(header[:9] + (None,) + header[10:], buffers)


def encode_cancel(ticket: int) -> tuple[list, int]:
    return _record((CANCEL, ticket), [])


def decode_request(record: memoryview) -> tuple[int, int, InferenceRequest | None]:
    """(kind, ticket, request or None for CANCEL). Tensor bytes are copied
    out of ``record``."""
    header, body = _split(record)
    if header[0] == CANCEL:
        return CANCEL, header[1], None
    (_, ticket, model, version, id, priority, timeout_us, batch_size, parameters, signature,
     shared_memory, sequence_id, sequence_start, sequence_end, inputs, input_data,
     outputs) = header
    data = bytes(body)  # the one copy out of the ring; inputs view it
    view = memoryview(data)
    at = 0
    built = []
    for name, datatype, shape, byte_size, ref, kind, spec in inputs:
        value = None
        if kind == _BYTES:
            value = view[at:at + spec]
            at += spec
        elif kind == _ARRAY:
            dtype, array_shape, nbytes = spec
            value = np.frombuffer(view[at:at + nbytes], dtype).reshape(array_shape)
            at += nbytes
        elif kind == _VALUE:
            value = spec
        built.append(InferInput(name, datatype, shape, value, byte_size, _unref(ref)))
    if input_data is None:
        source = None
    elif isinstance(input_data, int):
        source = view[at:at + input_data]
    else:
        source = []
        for n in input_data:
            source.append(view[at:at + n])
            at += n
    request = InferenceRequest(
        model, built, tuple(RequestedOutput(n, c, _unref(r)) for n, c, r in outputs),
        version=version, id=id, priority=priority, timeout_us=timeout_us,
        batch_size=batch_size, input_data=source, parameters=parameters, signature=signature,
        shared_memory=shared_memory, sequence_id=sequence_id, sequence_start=sequence_start,
        sequence_end=sequence_end)
    return INFER, ticket, request


# -- responses (engine -> worker) ------------------------------------------------------

def encode_response(ticket: int, response: InferenceResponse, cache_id: int) -> tuple[list, int]:
    """(parts, size) of the record answering ``ticket``. ``cache_id`` names
    the response's shared ``cache`` dict (equal for equal signatures)."""
    error = response.error
    buffers = []
    outputs = []
    for out in response.outputs:
        data = out.data
        if out.datatype == "BYTES" or data.dtype == np.object_:
            raw = tensors.serialize_strings(data)
            dtype = None
        else:
            array = np.ascontiguousarray(data)
            raw = memoryview(array).cast("B") if array.ndim else array.tobytes()
            dtype = array.dtype.str
        buffers.append(raw)
        classes = None if out.classes is None else [[tuple(c) for c in row]
                                                    for row in out.classes]
        outputs.append((out.name, out.datatype, tuple(data.shape), dtype, _nbytes(raw),
                        classes, out.classified, _ref(out.shared_memory)))
    header = (ticket, response.model, response.version, response.id,
              None if error is None else (int(error.code), error.message),
              response.batch_size, response.batched, cache_id, tuple(outputs))
    return _record(header, buffers)


def decode_response(record: memoryview, caches: "ResponseCaches") -> tuple[int, InferenceResponse]:
    """(ticket, response); output bytes are copied out of ``record``."""
    header, body = _split(record)
    ticket, model, version, id, error, batch_size, batched, cache_id, outputs = header
    data = bytes(body) if outputs else b""
    at = 0
    built = []
    for name, datatype, shape, dtype, nbytes, classes, classified, ref in outputs:
        raw = memoryview(data)[at:at + nbytes]
        at += nbytes
        if dtype is None:
            count = 1
            for d in shape:
                count *= d
            array = tensors.deserialize_strings(raw, count, name).reshape(shape)
        else:
            array = np.frombuffer(raw, dtype).reshape(shape)
        out = InferOutput(name, datatype, array,
                          None if classes is None else [[Class(*c) for c in row]
                                                        for row in classes], classified)
        out.shared_memory = _unref(ref)
        built.append(out)
    return ticket, InferenceResponse(
        model, version, id, built, None if error is None else ServerError(*error),
        batch_size, batched, caches.get(cache_id))


class ResponseCaches:
    """The worker's copies of the engine's per-signature ``cache`` dicts,
    by the engine's id for them; at most ``limit`` are kept (a dropped one
    only costs the front end its memoized encodings)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._caches: dict[int, dict] = {}

    def get(self, cache_id: int) -> dict:
        if not cache_id:
            return {}
        found = self._caches.get(cache_id)
        if found is None:
            if len(self._caches) >= self.limit:
                self._caches.clear()
            found = self._caches[cache_id] = {}
        return found
