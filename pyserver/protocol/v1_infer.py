"""v1 inference translation: NV-InferRequest headers into InferenceRequests,
InferenceResponses into InferResponseHeaders.

No sockets here, and no model knowledge: v1 leaves datatypes (and fixed
dims) to the model's config, which the server API supplies. A header is
parsed once per distinct text (its id left out) into a RequestTemplate,
then reused: per request the template makes an InferenceRequest over the
body, and the response header is cached per output shapes in the
response's cache.
"""

from __future__ import annotations

import re

from google.protobuf import text_encoding, text_format

from pyserver.api import datatypes
from pyserver.api.limits import UINT64_MAX
from pyserver.api.request import InferenceRequest, InferInput, RequestedOutput
from pyserver.api.response import InferenceResponse
from pyserver.errors import Code, invalid_arg, v1_code
from pyserver.protos import api_pb2
from pyserver.shared_memory import SharedMemoryRef

MAX_CACHED_TEMPLATES = 1024
_ID_FIELD = re.compile(r"id:\s*([0-9]+)")
_CORRELATION_FIELD = re.compile(r"correlation_id:\s*([0-9]+)")
_SPACE = " \t\r\n\f\v"
_ID_TAG = b"\x28"  # InferResponseHeader.id: field 5, varint


class RequestTemplate:
    """A parsed InferRequestHeader without its id: everything of a request
    but the model, the id and the data."""

    __slots__ = ("batch_size", "inputs", "outputs", "priority", "timeout_us", "signature",
                 "shared_memory", "correlation_id", "sequence_start", "sequence_end")

    def __init__(self, header: api_pb2.InferRequestHeader, signature) -> None:
        inputs = []
        shared_memory = False
        for item in header.input:
            ref = _shared_memory_ref(item)
            shared_memory = shared_memory or ref is not None
            inputs.append(InferInput(item.name, None, tuple(item.dims) if item.dims else None,
                                     None, item.batch_byte_size or None, ref))
        outputs = []
        for item in header.output:
            ref = _shared_memory_ref(item)
            shared_memory = shared_memory or ref is not None
            outputs.append(RequestedOutput(item.name, item.cls.count if item.HasField("cls")
                                           else 0, ref))
        self.shared_memory = shared_memory
        self.batch_size = header.batch_size
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.priority = header.priority
        self.timeout_us = header.timeout_microseconds
        # InferRequestHeader.Flag: SEQUENCE_START = 1, SEQUENCE_END = 2.
        self.correlation_id = header.correlation_id
        self.sequence_start = bool(header.flags & 1)
        self.sequence_end = bool(header.flags & 2)
        self.signature = ("v1", signature)

    def request(self, model: str, version: int, request_id: int, data) -> InferenceRequest:
        """The InferenceRequest of this header for ``model``; ``data`` is
        the body (inputs back to back) or the raw_input list."""
        return InferenceRequest(model, self.inputs, self.outputs, version=version, id=request_id,
                                priority=self.priority, timeout_us=self.timeout_us,
                                batch_size=self.batch_size, input_data=data,
                                signature=self.signature, shared_memory=self.shared_memory,
                                sequence_id=self.correlation_id,
                                sequence_start=self.sequence_start,
                                sequence_end=self.sequence_end)

    def for_sequence(self, correlation_id: int) -> "RequestTemplate":
        """This template with another correlation id (a shallow copy): the
        headers of a sequence's requests share one parsed template."""
        if correlation_id == self.correlation_id:
            return self
        copy = RequestTemplate.__new__(RequestTemplate)
        for name in RequestTemplate.__slots__:
            setattr(copy, name, getattr(self, name))
        copy.correlation_id = correlation_id
        return copy


class TemplateCache:
    """RequestTemplates by header text (or serialized header), bounded."""

    def __init__(self) -> None:
        self._templates: dict = {}

    def from_text(self, header_text: str) -> tuple[RequestTemplate, int]:
        """(template, client id) of an NV-InferRequest header. Raises
        ServerError for a malformed header."""
        text, request_id = split_request_id(header_text)
        text, correlation_id = split_correlation_id(text)
        template = self._templates.get(text)
        if template is None:
            template = RequestTemplate(parse_request_header(text), text)
            self._remember(text, template)
        return template.for_sequence(correlation_id), request_id

    def from_header(self, header: api_pb2.InferRequestHeader) -> RequestTemplate:
        """The template of a gRPC meta_data header. Clears ``header.id``
        (the caller reads it first)."""
        header.id = 0
        correlation_id = header.correlation_id
        header.correlation_id = 0
        key = header.SerializeToString()
        template = self._templates.get(key)
        if template is None:
            template = RequestTemplate(header, key)
            self._remember(key, template)
        return template.for_sequence(correlation_id)

    def _remember(self, key, template: RequestTemplate) -> None:
        if len(self._templates) >= MAX_CACHED_TEMPLATES:
            self._templates.clear()
        self._templates[key] = template


def split_correlation_id(header_text: str) -> tuple[str, int]:
    """Separates ``correlation_id`` from the rest of an NV-InferRequest (as
    split_request_id the id), so that a sequence's requests share one
    template; 0 when there is none. A header naming it twice is left whole,
    for the parser to refuse."""
    start = header_text.find("correlation_id:")
    while start != -1:
        if (start == 0 or header_text[start - 1] in _SPACE) and \
                not header_text.count('"', 0, start) % 2:
            match = _CORRELATION_FIELD.match(header_text, start)
            if match is None:
                break
            digits = match.group(1)
            correlation_id = int(digits)
            if correlation_id > UINT64_MAX:
                raise invalid_arg(f"correlation_id {digits[:24]} is out of range: the largest "
                                  f"is {UINT64_MAX}")
            cut = start - 1 if start else 0
            rest = header_text[:cut] + header_text[match.end():]
            if "correlation_id" in rest:
                break
            return rest, correlation_id
        start = header_text.find("correlation_id:", start + 15)
    return header_text, 0


def split_request_id(header_text: str) -> tuple[str, int]:
    """Separates the client's ``id`` from the rest of an NV-InferRequest, so
    that requests differing only in their id share one template. Cheap: no
    protobuf parsing. Raises ServerError(INVALID_ARG) for an id beyond
    uint64."""
    start = header_text.find("id:")
    while start != -1:
        if (start == 0 or header_text[start - 1] in _SPACE) and \
                not header_text.count('"', 0, start) % 2:
            match = _ID_FIELD.match(header_text, start)
            if match is not None:
                digits = match.group(1)
                request_id = int(digits)
                if request_id > UINT64_MAX:
                    raise invalid_arg(f"request id {digits[:24]} is out of range: the largest "
                                      f"is {UINT64_MAX}")
                cut = start - 1 if start else 0  # the whitespace before goes too
                return header_text[:cut] + header_text[match.end():], request_id
        start = header_text.find("id:", start + 3)
    return header_text, 0


def parse_request_header(text: str) -> api_pb2.InferRequestHeader:
    header = api_pb2.InferRequestHeader()
    try:
        text_format.Parse(text, header)
    except text_format.ParseError as exc:
        raise invalid_arg(f"malformed NV-InferRequest header: {exc}") from None
    return header


def _shared_memory_ref(item) -> SharedMemoryRef | None:
    """An Input's or Output's ``shared_memory`` (InferSharedMemory) as a
    reference, None when it has none."""
    if not item.HasField("shared_memory"):
        return None
    shm = item.shared_memory
    return SharedMemoryRef(shm.name, shm.offset, shm.byte_size)


# -- responses ----------------------------------------------------------------

class InferResult:
    """Raw output bytes (in response order; empty for a classification)
    and the response header in the forms the transports need."""

    __slots__ = ("raw", "binary", "one_line", "text")

    def __init__(self, raw: list[bytes], binary: bytes, one_line: str, text: str) -> None:
        self.raw = raw
        self.binary = binary
        self.one_line = one_line
        self.text = text


def encode_response(response: InferenceResponse, request_id: int = 0,
                    views: bool = False) -> InferResult:
    """A successful InferenceResponse as raw bytes and an
    InferResponseHeader. The header (without id) is cached per output
    shapes when no output is a classification. With ``views`` the raw
    outputs are memoryviews of the output tensors where they can be
    (InferOutput.wire_view), for a writer that sends them as they are."""
    raw = []
    shapes = []
    any_cls = False
    for out in response.outputs:
        if out.classes is not None:
            any_cls = True
            raw.append(b"")
        elif out.shared_memory is not None:  # written into the region
            raw.append(b"")
        else:
            raw.append(out.wire_view() if views else out.to_bytes())
        shapes.append(out.shape)
    key = ("v1", *shapes)
    cached = None if any_cls else response.cache.get(key)
    if cached is None:
        header = _response_header(response, raw)
        binary = header.SerializeToString()
        text_header = _text_form(header)
        one_line = text_format.MessageToString(text_header, as_one_line=True)
        text = text_format.MessageToString(text_header)
        if not any_cls:
            response.cache[key] = (binary, one_line, text)
    else:
        binary, one_line, text = cached
    if request_id:
        binary = binary + _ID_TAG + _varint(request_id)
        one_line = f"{one_line} id: {request_id}" if one_line else f"id: {request_id}"
        text = f"{text}id: {request_id}\n"
    return InferResult(raw, binary, one_line, text)


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


def _response_header(response: InferenceResponse, raw: list[bytes]) -> api_pb2.InferResponseHeader:
    header = api_pb2.InferResponseHeader(model_name=response.model,
                                         model_version=response.version,
                                         batch_size=response.batch_size)
    for out, data in zip(response.outputs, raw):
        entry = header.output.add(name=out.name, data_type=datatypes.CONFIG_TYPES[
            out.classified or out.datatype])
        if out.classes is not None:
            for row in out.classes:
                classes = entry.batch_classes.add()
                for c in row:
                    classes.cls.add(idx=c.index, value=c.value, label=c.label)
        else:
            entry.raw.dims.extend(out.shape[1:] if response.batched else out.shape)
            entry.raw.batch_byte_size = len(data) if out.shared_memory is None else \
                out.shared_memory.byte_size
    return header


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
    code = v1_code(Code(code))
    name = code.name
    if code == Code.SUCCESS:
        return f'code: SUCCESS server_id: "{server_id}" request_id: {request_id}'
    return (f"code: {name} msg: {_quote(message)} server_id: \"{server_id}\" "
            f"request_id: {request_id}")


def _quote(text: str) -> str:
    return '"' + text_encoding.CEscape(text, as_utf8=False) + '"'
