"""v1 inference translation: NV-InferRequest headers into request plans,
wire bytes into payloads, runtime results into InferResponseHeaders.

No sockets here. A plan is built once per distinct header text and model
version, then reused: the hot path is a dict lookup, numpy views over the
body and a cached response header with the request id appended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from google.protobuf import text_encoding, text_format

from pyserver import tensors
from pyserver.errors import Code, ServerError, internal, invalid_arg
from pyserver.protos import api_pb2
from pyserver.protos import model_config_pb2 as mc
from pyserver.repository.manager import ModelVersion

MAX_CACHED_PLANS = 1024
_ID_FIELD = re.compile(r"(?:^|\s)id:\s*(\d+)")
_ID_TAG = b"\x28"  # InferResponseHeader.id: field 5, varint


class InferPayload:
    """What a runtime gets: the whole batch of each input, and the output
    names it must produce. The scheduler also reads ``shape_key`` (requests
    with different keys are never batched together), ``priority`` and
    ``timeout_us`` (the request's queue timeout, 0 = none)."""

    __slots__ = ("inputs", "outputs", "shape_key", "priority", "timeout_us")

    def __init__(self, inputs: dict[str, np.ndarray], outputs: list[str], shape_key: int = 0,
                 priority: int = 0, timeout_us: int = 0) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.shape_key = shape_key
        self.priority = priority
        self.timeout_us = timeout_us


@dataclass
class InputPlan:
    name: str
    data_type: int
    dtype: np.dtype
    shape: tuple[int, ...]   # what the runtime receives, batch dim included
    count: int               # elements in the whole batch
    byte_size: int           # expected bytes; for TYPE_STRING the declared size


@dataclass
class OutputPlan:
    name: str
    data_type: int
    dtype: np.dtype
    cls_count: int           # 0 = raw tensor
    dims: tuple[int, ...]    # config dims (may hold -1)
    reshape: bool            # runtime shape differs from dims


@dataclass
class InferPlan:
    """A validated NV-InferRequest for one model version."""

    version: ModelVersion
    batch_size: int
    inputs: list[InputPlan]
    outputs: list[OutputPlan]
    output_names: list[str]
    batched: bool
    shape_key: int = 0       # equal for requests whose non-batch input shapes agree
    priority: int = 0
    timeout_us: int = 0
    # output shapes -> (binary header, one-line text, multi-line text), id not set
    response_cache: dict = field(default_factory=dict)

    def payload_from_body(self, body: bytes | bytearray | memoryview) -> InferPayload:
        """Slices the HTTP body into the inputs, in header order."""
        view = memoryview(body)
        inputs = {}
        offset = 0
        for spec in self.inputs:
            end = offset + spec.byte_size
            if end > len(view):
                raise invalid_arg(f"unexpected size {len(view) - offset} for input '{spec.name}', "
                                  f"expecting {spec.byte_size}")
            inputs[spec.name] = _input_array(spec, view[offset:end])
            offset = end
        if offset != len(view):
            raise invalid_arg(f"unexpected additional input data: {len(view) - offset} bytes after "
                              f"the last input")
        return InferPayload(inputs, self.output_names, self.shape_key, self.priority,
                            self.timeout_us)

    def payload_from_raw(self, raw_inputs) -> InferPayload:
        """One buffer per input (gRPC raw_input), in header order."""
        if len(raw_inputs) < len(self.inputs):
            raise invalid_arg(f"expected tensor data for at least {len(self.inputs)} inputs, "
                              f"got {len(raw_inputs)}")
        inputs = {}
        for spec, data in zip(self.inputs, raw_inputs):
            if len(data) != spec.byte_size:
                raise invalid_arg(f"unexpected size {len(data)} for input '{spec.name}', "
                                  f"expecting {spec.byte_size}")
            inputs[spec.name] = _input_array(spec, memoryview(data))
        return InferPayload(inputs, self.output_names, self.shape_key, self.priority,
                            self.timeout_us)


def _input_array(spec: InputPlan, data: memoryview) -> np.ndarray:
    if spec.data_type == mc.TYPE_STRING:
        return tensors.deserialize_strings(data, spec.count, spec.name).reshape(spec.shape)
    return np.frombuffer(data, dtype=spec.dtype).reshape(spec.shape)


# -- plans --------------------------------------------------------------------

def split_request_id(header_text: str) -> tuple[str, int]:
    """Separates the client's ``id`` from the rest of an NV-InferRequest, so
    that requests differing only in their id share one plan. Cheap: no
    protobuf parsing."""
    match = _ID_FIELD.search(header_text)
    if match is None or header_text.count('"', 0, match.start()) % 2:
        return header_text, 0
    return header_text[:match.start()] + header_text[match.end():], int(match.group(1))


def plan_for(version: ModelVersion, plan_text: str) -> InferPlan:
    """The cached plan for ``plan_text`` (a header without its id, see
    split_request_id) on ``version``; parsed and validated on first use.
    Raises ServerError(INVALID_ARG) for a bad header."""
    plans = version.plans
    plan = plans.get(plan_text)
    if plan is None:
        header = parse_request_header(plan_text)
        plan = build_plan(version, header)
        if len(plans) >= MAX_CACHED_PLANS:
            plans.clear()
        plans[plan_text] = plan
    return plan


def parse_request_header(text: str) -> api_pb2.InferRequestHeader:
    header = api_pb2.InferRequestHeader()
    try:
        text_format.Parse(text, header)
    except text_format.ParseError as exc:
        raise invalid_arg(f"malformed NV-InferRequest header: {exc}") from None
    return header


def build_plan(version: ModelVersion, header: api_pb2.InferRequestHeader) -> InferPlan:
    """Validates a request header against the model config (facts §2.4)."""
    config = version.config
    batch_size = header.batch_size
    batched = config.max_batch_size > 0
    if batch_size < 1:
        raise invalid_arg(f"inference request batch-size must be >= 1 for '{config.name}'")
    if batch_size != 1 and batch_size > config.max_batch_size:
        raise invalid_arg(f"inference request batch-size must be <= {max(config.max_batch_size, 1)} "
                          f"for '{config.name}'")
    config_inputs = {i.name: i for i in config.input}
    if len(header.input) != len(config.input):
        raise invalid_arg(f"expected {len(config.input)} inputs but got {len(header.input)} "
                          f"inputs for model '{config.name}'")
    inputs = []
    seen = set()
    for requested in header.input:
        if requested.HasField("shared_memory"):
            raise _no_shared_memory("input", requested.name)
        model_input = config_inputs.get(requested.name)
        if model_input is None:
            raise invalid_arg(f"unexpected inference input '{requested.name}' for model "
                              f"'{config.name}'")
        if requested.name in seen:
            raise invalid_arg(f"input '{requested.name}' is given more than once")
        seen.add(requested.name)
        inputs.append(_plan_input(config, model_input, requested, batch_size))
    config_outputs = {o.name: o for o in config.output}
    requested_outputs = list(header.output) or [
        api_pb2.InferRequestHeader.Output(name=o.name) for o in config.output]
    outputs = []
    for requested in requested_outputs:
        if requested.HasField("shared_memory"):
            raise _no_shared_memory("output", requested.name)
        model_output = config_outputs.get(requested.name)
        if model_output is None:
            raise invalid_arg(f"unexpected inference output '{requested.name}' for model "
                              f"'{config.name}'")
        cls_count = requested.cls.count if requested.HasField("cls") else 0
        if requested.HasField("cls") and model_output.data_type not in tensors.CLASSIFIABLE:
            raise invalid_arg(f"class result not available for output '{requested.name}' due to "
                              f"unsupported type '{tensors.type_name(model_output.data_type)}'")
        outputs.append(OutputPlan(
            requested.name, model_output.data_type, tensors.NUMPY_DTYPES[model_output.data_type],
            cls_count, tuple(model_output.dims), model_output.HasField("reshape")))
    shape_key = hash(tuple(i.shape[1:] if batched else i.shape for i in inputs)) & (2**63 - 1)
    return InferPlan(version, batch_size, inputs, outputs, [o.name for o in outputs], batched,
                     shape_key, header.priority, header.timeout_microseconds)


def _no_shared_memory(kind: str, name: str) -> ServerError:
    return ServerError(Code.UNSUPPORTED, f"{kind} '{name}' uses shared memory: shared memory is "
                                         f"not supported")


def _plan_input(config: mc.ModelConfig, model_input: mc.ModelInput,
                requested: api_pb2.InferRequestHeader.Input, batch_size: int) -> InputPlan:
    name = requested.name
    config_dims = list(model_input.dims)
    if requested.dims:
        dims = list(requested.dims)
        if len(dims) != len(config_dims) or any(
                c != -1 and c != d for c, d in zip(config_dims, dims)) or any(d < 0 for d in dims):
            raise invalid_arg(f"unexpected shape for input '{name}' for model '{config.name}'. "
                              f"Expected {_dims_text(config_dims)}, got {_dims_text(dims)}")
    elif -1 in config_dims:
        raise invalid_arg(f"model supports variable-size for input '{name}', request must "
                          f"specify input shape")
    else:
        dims = config_dims
    if model_input.HasField("reshape"):
        dims = list(model_input.reshape.shape)
    elements = int(np.prod(dims, dtype=np.int64)) if dims else 1
    batch = batch_size if config.max_batch_size > 0 else 1
    shape = tuple([batch_size] + dims) if config.max_batch_size > 0 else tuple(dims)
    count = elements * batch
    if model_input.data_type == mc.TYPE_STRING:
        if requested.batch_byte_size == 0 and count > 0:
            raise invalid_arg(f"input '{name}' of type TYPE_STRING must give batch_byte_size")
        byte_size = requested.batch_byte_size
    else:
        byte_size = count * tensors.element_size(model_input.data_type)
        if requested.batch_byte_size and requested.batch_byte_size != byte_size:
            raise invalid_arg(f"unexpected batch_byte_size {requested.batch_byte_size} for input "
                              f"'{name}', expecting {byte_size}")
    return InputPlan(name, model_input.data_type, tensors.NUMPY_DTYPES[model_input.data_type],
                     shape, count, byte_size)


def _dims_text(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


# -- responses ----------------------------------------------------------------

@dataclass
class InferResult:
    """Raw output bytes (in header order) and the response header in the
    forms the transports need."""

    raw: list[bytes]
    header: api_pb2.InferResponseHeader | None   # built only when not cached
    binary: bytes
    one_line: str
    text: str


def build_response(plan: InferPlan, outputs: dict[str, np.ndarray],
                   request_id: int = 0) -> InferResult:
    """Turns runtime outputs into raw bytes and an InferResponseHeader.
    Raises ServerError(INTERNAL) when the runtime broke the model's contract."""
    raw = []
    shapes = []
    any_cls = False
    arrays = []
    for spec in plan.outputs:
        array = outputs.get(spec.name)
        if array is None:
            raise internal(f"model did not produce output '{spec.name}'")
        array = _checked_output(plan, spec, array)
        arrays.append(array)
        if spec.cls_count:
            any_cls = True
            raw.append(b"")
        elif spec.data_type == mc.TYPE_STRING:
            raw.append(tensors.serialize_strings(array))
        else:
            raw.append(array.tobytes())
        shapes.append(array.shape)
    key = tuple(shapes)
    cached = None if any_cls else plan.response_cache.get(key)
    if cached is None:
        header = _response_header(plan, arrays, raw)
        binary = header.SerializeToString()
        text_header = _text_form(header)
        one_line = text_format.MessageToString(text_header, as_one_line=True)
        text = text_format.MessageToString(text_header)
        if not any_cls:
            plan.response_cache[key] = (binary, one_line, text)
    else:
        header = None
        binary, one_line, text = cached
    if request_id:
        binary = binary + _ID_TAG + _varint(request_id)
        one_line = f"{one_line} id: {request_id}" if one_line else f"id: {request_id}"
        text = f"{text}id: {request_id}\n"
    return InferResult(raw, header, binary, one_line, text)


def _text_form(header: api_pb2.InferResponseHeader) -> api_pb2.InferResponseHeader:
    """The header as the text forms carry it (NV-InferResponse, the
    format=text trailer): without ``Output.data_type``. That field came in
    1.12; text parsers of older clients reject an unknown field, and the
    1.11 client (the last on PyPI) then fails the whole request. The binary
    forms keep it: binary parsers skip unknown fields."""
    if not any(output.data_type for output in header.output):
        return header
    text_header = api_pb2.InferResponseHeader()
    text_header.CopyFrom(header)
    for output in text_header.output:
        output.ClearField("data_type")
    return text_header


def _checked_output(plan: InferPlan, spec: OutputPlan, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if spec.data_type == mc.TYPE_STRING:
        if array.dtype != np.object_ and array.dtype.kind not in "SU":
            raise internal(f"output '{spec.name}' is {array.dtype}, config says TYPE_STRING")
    elif array.dtype != spec.dtype:
        raise internal(f"output '{spec.name}' is {array.dtype}, config says "
                       f"{tensors.type_name(spec.data_type)}")
    if plan.batched and (array.ndim == 0 or array.shape[0] != plan.batch_size):
        raise internal(f"output '{spec.name}' has shape {list(array.shape)}, expected batch "
                       f"size {plan.batch_size} first")
    if spec.reshape and -1 not in spec.dims:
        target = (plan.batch_size, *spec.dims) if plan.batched else spec.dims
        array = array.reshape(target)
    return array


def _response_header(plan: InferPlan, arrays: list[np.ndarray],
                     raw: list[bytes]) -> api_pb2.InferResponseHeader:
    version = plan.version
    header = api_pb2.InferResponseHeader(model_name=version.name, model_version=version.version,
                                         batch_size=plan.batch_size)
    for spec, array, data in zip(plan.outputs, arrays, raw):
        out = header.output.add(name=spec.name, data_type=spec.data_type)
        if spec.cls_count:
            _classify(out, array, spec, plan, version.labels.get(spec.name, ()))
        else:
            out.raw.dims.extend(array.shape[1:] if plan.batched else array.shape)
            out.raw.batch_byte_size = len(data)
    return header


def _classify(out: api_pb2.InferResponseHeader.Output, array: np.ndarray, spec: OutputPlan,
              plan: InferPlan, labels) -> None:
    """Top-k per batch element: descending score, idx in the flattened
    element, label from the label file line idx (facts §2.6)."""
    rows = array.reshape(plan.batch_size if plan.batched else 1, -1)
    k = min(spec.cls_count, rows.shape[1])
    for row in rows:
        top = np.argsort(-row.astype(np.float64), kind="stable")[:k]
        classes = out.batch_classes.add()
        for idx in top:
            idx = int(idx)
            classes.cls.add(idx=idx, value=float(np.float32(row[idx])),
                            label=labels[idx] if idx < len(labels) else "")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# -- request status -----------------------------------------------------------

def status_text(code: int, message: str, server_id: str, request_id: int) -> str:
    """RequestStatus in the one-line text form of the NV-Status header."""
    name = Code(code).name
    if code == Code.SUCCESS:
        return f'code: SUCCESS server_id: "{server_id}" request_id: {request_id}'
    return (f"code: {name} msg: {_quote(message)} server_id: \"{server_id}\" "
            f"request_id: {request_id}")


def _quote(text: str) -> str:
    return '"' + text_encoding.CEscape(text, as_utf8=False) + '"'


def error_of(exc: BaseException) -> ServerError:
    """Any exception as the ServerError the client should see."""
    if isinstance(exc, ServerError):
        return exc
    return ServerError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")
