"""The protocol-neutral inference response ``InferenceServer.infer``
delivers: output tensors as numpy arrays, or an error with a Code."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from pyserver import tensors
from pyserver.errors import ServerError


class Class(NamedTuple):
    """One entry of a top-k classification: the index in the flattened
    element, its score, and the label file's line at that index ("" when
    there is none)."""

    index: int
    value: float
    label: str


class InferOutput:
    """One output. ``data`` is the whole tensor, batch dimension included
    when the model batches. A classification output has datatype BYTES,
    ``data`` of "value:index[:label]" strings shaped [batch, k] ([k]
    without batching), and ``classes``: per batch element its k Classes in
    descending score; ``classified`` is then the datatype of the scores.
    ``shared_memory`` (a SharedMemoryRef with the bytes written) is set when
    the server wrote the output into a shared-memory region: then the wire
    carries no data for it."""

    __slots__ = ("name", "datatype", "shape", "data", "classes", "classified", "shared_memory")

    def __init__(self, name: str, datatype: str, data: np.ndarray,
                 classes: list[list[Class]] | None = None, classified: str | None = None) -> None:
        self.name = name
        self.datatype = datatype
        self.shape = data.shape
        self.data = data
        self.classes = classes
        self.classified = classified
        self.shared_memory = None

    def to_bytes(self) -> bytes:
        """The tensor's wire bytes: row-major little-endian; BYTES elements
        each as a 4-byte little-endian length, then the bytes."""
        if self.datatype == "BYTES":
            return tensors.serialize_strings(self.data)
        return np.ascontiguousarray(self.data).tobytes()

    def wire_view(self) -> bytes | memoryview:
        """The wire bytes without a copy where the tensor allows it: a
        memoryview of unsigned bytes over ``data`` (kept alive by the view)
        when it is a contiguous numeric tensor, else ``to_bytes()``. For
        writers that send the buffer as it is."""
        data = self.data
        if self.datatype != "BYTES" and data.ndim and data.flags.c_contiguous:
            return memoryview(data).cast("B")
        return self.to_bytes()

    def __repr__(self) -> str:
        return f"InferOutput({self.name!r}, {self.datatype!r}, {self.shape!r})"


class InferenceResponse:
    """The answer to one InferenceRequest: ``outputs`` in the order the
    request asked for them (the model's order when it named none), or
    ``error`` (then ``outputs`` is empty). ``batch_size`` is the request's
    (1 for a model that does not batch; ``batched`` says which).
    ``cache`` is a dict shared by the responses of every request with the
    same signature on the same model version: front ends may memoize their
    encodings in it under their own keys."""

    __slots__ = ("model", "version", "id", "outputs", "error", "batch_size", "batched", "cache")

    def __init__(self, model: str, version: int, id: Any, outputs: list[InferOutput],
                 error: ServerError | None = None, batch_size: int = 1, batched: bool = False,
                 cache: dict | None = None) -> None:
        self.model = model
        self.version = version
        self.id = id
        self.outputs = outputs
        self.error = error
        self.batch_size = batch_size
        self.batched = batched
        self.cache = cache if cache is not None else {}

    @classmethod
    def failure(cls, model: str, version: int, id: Any, error: ServerError) -> "InferenceResponse":
        return cls(model, version, id, [], error)

    def output(self, name: str) -> InferOutput:
        """The output called ``name``; KeyError if the response has none."""
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(name)

    def as_numpy(self, name: str) -> np.ndarray:
        return self.output(name).data

    def raise_for_error(self) -> "InferenceResponse":
        """Raises the error, if any; returns self."""
        if self.error is not None:
            raise self.error
        return self

    def __repr__(self) -> str:
        if self.error is not None:
            return f"InferenceResponse({self.model!r}, error={self.error!r})"
        return f"InferenceResponse({self.model!r}, {self.version}, outputs={self.outputs!r})"
