"""The protocol-neutral inference request: what every front end (and the
in-process Python API) hands to ``InferenceServer.infer``.

No wire format here. Datatypes are the v2 names (``"FP32"``, ``"BYTES"``),
the names Triton's core uses; a v1 front end leaves a datatype out and the
model's config supplies it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from pyserver.api import datatypes

LATEST = -1  # version: the newest ready version


class InferInput:
    """One input tensor.

    ``data`` is one of: a buffer (bytes, bytearray, memoryview) holding the
    tensor's raw row-major little-endian bytes (BYTES: each element as a
    4-byte little-endian length, then its bytes); a numpy array; a (nested)
    list of values (JSON data); or None when the request's ``input_data``
    carries the bytes. ``datatype`` None means the model's; ``shape`` None
    means the model's dims (fixed-shape inputs only). ``byte_size`` is the
    declared size of the data (None: computed; required for BYTES data
    inside ``input_data``). ``shared_memory``, when set, is a
    pyserver.shared_memory.SharedMemoryRef: the data lies in that registered
    region (``data`` stays None; the server resolves it)."""

    __slots__ = ("name", "datatype", "shape", "data", "byte_size", "shared_memory")

    def __init__(self, name: str, datatype: str | None = None,
                 shape: Sequence[int] | None = None, data: Any = None,
                 byte_size: int | None = None, shared_memory: Any = None) -> None:
        self.name = name
        self.datatype = datatype
        self.shape = tuple(shape) if shape is not None else None
        self.data = data
        self.byte_size = byte_size
        self.shared_memory = shared_memory

    @classmethod
    def from_array(cls, name: str, array: Any) -> "InferInput":
        """An input whose datatype and shape are the array's."""
        array = np.asarray(array)
        return cls(name, datatypes.of_numpy(array.dtype), array.shape, array)

    def __repr__(self) -> str:
        return f"InferInput({self.name!r}, {self.datatype!r}, {self.shape!r})"


class RequestedOutput:
    """An output the client wants; ``classification`` > 0 asks for the
    top-k classes of it instead of the tensor. ``shared_memory``, when set,
    is a pyserver.shared_memory.SharedMemoryRef: the server writes the
    output there and the response carries no data for it."""

    __slots__ = ("name", "classification", "shared_memory")

    def __init__(self, name: str, classification: int = 0, shared_memory: Any = None) -> None:
        self.name = name
        self.classification = classification
        self.shared_memory = shared_memory

    def __repr__(self) -> str:
        return f"RequestedOutput({self.name!r}, classification={self.classification})"


class InferenceRequest:
    """One inference request for ``model`` (``version`` LATEST or a number).

    Shapes include the batch dimension when the model batches (v2's rule),
    unless ``batch_size`` is given: then shapes leave the batch dimension out
    and ``batch_size`` gives it (v1's rule). ``outputs`` empty means every
    output of the model. ``input_data``, when set, holds the data of inputs
    whose ``data`` is None: one buffer with their bytes back to back in
    input order (v1 HTTP's body), or a sequence of buffers, one per input
    in order (v1 gRPC's raw_input). ``id`` is echoed in the response (an
    int must fit in uint64). ``priority`` 0 is the model's default;
    ``timeout_us`` 0 means none. ``parameters`` is kept for the front end.
    For sequence (stateful) models ``sequence_id`` names the sequence (an
    int in uint64 range or a str; 0 / "" = none) and ``sequence_start`` /
    ``sequence_end`` mark its first and last request; other models ignore
    them.

    ``signature``, when given, is a key that is equal for two requests only
    if they differ at most in the values of their data (not in which inputs
    carry it inline), id and parameters; the server caches its validation
    under it. Left out, the server computes one.

    ``shared_memory`` True says that some input or output has a
    ``shared_memory`` reference (the server resolves them only then)."""

    __slots__ = ("model", "version", "inputs", "outputs", "id", "priority", "timeout_us",
                 "batch_size", "input_data", "parameters", "signature", "shared_memory",
                 "sequence_id", "sequence_start", "sequence_end")

    def __init__(self, model: str, inputs: Sequence[InferInput] | Mapping[str, Any] = (),
                 outputs: Sequence[RequestedOutput | str] = (), *, version: int = LATEST,
                 id: int | str = 0, priority: int = 0, timeout_us: int = 0,
                 batch_size: int | None = None, input_data: Any = None,
                 parameters: dict | None = None, signature: Any = None,
                 shared_memory: bool = False, sequence_id: int | str = 0,
                 sequence_start: bool = False, sequence_end: bool = False) -> None:
        self.model = model
        self.version = version
        if not isinstance(inputs, (list, tuple)) and isinstance(inputs, Mapping):
            inputs = [value if isinstance(value, InferInput) else InferInput.from_array(name, value)
                      for name, value in inputs.items()]
        self.inputs = inputs
        self.outputs = outputs if type(outputs) is tuple and not any(
            type(o) is str for o in outputs) else tuple(
            RequestedOutput(o) if isinstance(o, str) else o for o in outputs)
        self.id = id
        self.priority = priority
        self.timeout_us = timeout_us
        self.batch_size = batch_size
        self.input_data = input_data
        self.parameters = parameters
        self.signature = signature
        self.shared_memory = shared_memory
        self.sequence_id = sequence_id
        self.sequence_start = sequence_start
        self.sequence_end = sequence_end

    def cache_key(self) -> Any:
        """The signature, computed from the request when none was given."""
        if self.signature is not None:
            return self.signature
        return ("request", self.batch_size, self.priority, self.timeout_us,
                self.input_data is None,
                tuple((i.name, i.datatype, i.shape, i.data is None, i.byte_size)
                      for i in self.inputs),
                tuple((o.name, o.classification) for o in self.outputs))

    def __repr__(self) -> str:
        return (f"InferenceRequest({self.model!r}, version={self.version}, "
                f"inputs={list(self.inputs)!r}, outputs={list(self.outputs)!r})")
