"""v2 (KServe / Open Inference Protocol) translation: JSON inference
requests (with Triton's binary-tensor and classification extensions) and
gRPC ModelInferRequests into InferenceRequests, InferenceResponses into v2
responses, and the server API's status into the v2 metadata, config,
statistics and repository documents.

No sockets here, and no model knowledge: validation against the model is
the server API's (pyserver.api.plan); this module checks only that the
JSON has the v2 shape, naming the field that does not.
"""

from __future__ import annotations

import base64
import json

from google.protobuf import descriptor

from pyserver.api.limits import UINT64_MAX, is_int
from pyserver.api.request import LATEST, InferenceRequest, InferInput, RequestedOutput
from pyserver.api.response import InferenceResponse
from pyserver.api.status import IndexEntry, ModelMetadata, VersionStatus
from pyserver.errors import invalid_arg, v2_http_status
from pyserver.protos import v2_model_config_pb2 as mc2
from pyserver.shared_memory import SharedMemoryRef

EXTENSIONS = ["classification", "binary_tensor_data", "model_repository",
              "model_repository(unload_dependents)", "statistics", "model_configuration",
              "system_shared_memory", "cuda_shared_memory", "logging", "trace"]


def http_status(code: int) -> int:
    """Triton's HTTP status of a code (errors.v2_http_status)."""
    return v2_http_status(code)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def parse_version(text: str) -> int:
    """A URL's or message's model version: empty = LATEST."""
    if not text:
        return LATEST
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise invalid_arg(f"model version must be a number, got '{text[:32]}'")
    return int(text)


def load_json(data: bytes | bytearray | memoryview) -> object:
    """A JSON document; ServerError(INVALID_ARG) when it does not parse or
    nests deeper than the parser allows."""
    try:
        return json.loads(bytes(data))
    except RecursionError:
        raise invalid_arg("failed to parse the request JSON buffer: it nests too "
                          "deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_arg(f"failed to parse the request JSON buffer: {exc}") from None


# -- inference ------------------------------------------------------------------

class V2Request:
    """A translated v2 inference request: the InferenceRequest and which
    outputs go back as binary data."""

    __slots__ = ("request", "binary_outputs", "binary_default")

    def __init__(self, request: InferenceRequest, binary_outputs: dict[str, bool],
                 binary_default: bool) -> None:
        self.request = request
        self.binary_outputs = binary_outputs
        self.binary_default = binary_default

    @property
    def inputs(self) -> list[InferInput]:
        return self.request.inputs

    @property
    def outputs(self) -> list[tuple[str, int, bool]]:
        """(name, classification count, binary) per requested output."""
        return [(o.name, o.classification, self.binary_outputs.get(o.name, self.binary_default))
                for o in self.request.outputs]


def _object(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_arg(f"{what} must be a JSON object")
    return value


def _bool(value, what: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_arg(f"{what} must be true or false")
    return value


def request_from_json(doc, binary: memoryview, model: str = "",
                      version: int = LATEST) -> V2Request:
    """A v2 JSON inference request (``binary``: the body after the JSON)."""
    if not isinstance(doc, dict):
        raise invalid_arg("inference request must be a JSON object")
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise invalid_arg("'id' must be a string")
    params = _object(doc.get("parameters"), "'parameters'")
    binary_default = _bool(params.get("binary_data_output"), "parameter 'binary_data_output'")
    priority = params.get("priority", 0)
    timeout = params.get("timeout", 0)
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list):
        raise invalid_arg("inference request must give 'inputs' as an array")
    inputs = []
    offset = 0
    uses_shared_memory = False
    for item in raw_inputs:
        if not isinstance(item, dict):
            raise invalid_arg("each input must be a JSON object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(
                shape, list) or not all(is_int(d) for d in shape):
            raise invalid_arg("each input needs 'name', 'datatype' and an integer 'shape'")
        in_params = _object(item.get("parameters"), f"input '{name}': 'parameters'")
        size = in_params.get("binary_data_size")
        shared = _json_shared_memory(in_params, f"input '{name}'")
        if shared is not None:
            if size is not None or "data" in item:
                raise invalid_arg(f"input '{name}' gives shared memory and also data")
            uses_shared_memory = True
            inputs.append(InferInput(name, datatype, shape, shared_memory=shared))
            continue
        if size is not None:
            if not is_int(size) or size < 0:
                raise invalid_arg(f"input '{name}': binary_data_size must be a "
                                  f"non-negative integer")
            if "data" in item:
                raise invalid_arg(f"input '{name}' gives both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise invalid_arg(f"unexpected size for input '{name}': binary_data_size "
                                  f"{size} exceeds the {len(binary) - offset} bytes left "
                                  f"in the request body")
            data = binary[offset:offset + size]
            offset += size
        else:
            data = item.get("data")
            if data is None:
                raise invalid_arg(f"input '{name}' has neither 'data' nor binary_data_size")
            if isinstance(data, dict):
                raise invalid_arg(f"input '{name}': 'data' must be an array")
        inputs.append(InferInput(name, datatype, shape, data))
    if offset != len(binary):
        raise invalid_arg(f"unexpected additional input data: {len(binary) - offset} bytes "
                          f"after the last binary input")
    raw_outputs = doc.get("outputs")
    if raw_outputs is None:
        raw_outputs = []
    if not isinstance(raw_outputs, list):
        raise invalid_arg("'outputs' must be an array")
    outputs = []
    binary_outputs = {}
    for item in raw_outputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise invalid_arg("each requested output needs a 'name'")
        name = item["name"]
        out_params = _object(item.get("parameters"), f"output '{name}': 'parameters'")
        shared = _json_shared_memory(out_params, f"output '{name}'")
        uses_shared_memory = uses_shared_memory or shared is not None
        cls = out_params.get("classification", 0)
        if not is_int(cls) or cls < 0:
            raise invalid_arg(f"output '{name}': classification must be a "
                              f"non-negative integer")
        outputs.append(RequestedOutput(name, cls, shared))
        if "binary_data" in out_params:
            binary_outputs[name] = _bool(out_params["binary_data"],
                                         f"output '{name}': parameter 'binary_data'")
    sequence_id = params.get("sequence_id", 0)
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, (int, str)) or (
            isinstance(sequence_id, int) and not 0 <= sequence_id < 2**64):
        raise invalid_arg("parameter 'sequence_id' must be an unsigned 64-bit integer or a "
                          "string")
    request = InferenceRequest(model, inputs, outputs, version=version, id=request_id,
                               priority=priority, timeout_us=timeout, parameters=params,
                               shared_memory=uses_shared_memory, sequence_id=sequence_id,
                               sequence_start=_bool(params.get("sequence_start", False),
                                                    "parameter 'sequence_start'"),
                               sequence_end=_bool(params.get("sequence_end", False),
                                                  "parameter 'sequence_end'"))
    return V2Request(request, binary_outputs, binary_default)


def _json_shared_memory(params: dict, what: str) -> SharedMemoryRef | None:
    """The shared_memory_region / _offset / _byte_size parameters of a JSON
    tensor, or None when it names no region."""
    region = params.get("shared_memory_region")
    if region is None:
        if "shared_memory_byte_size" in params or "shared_memory_offset" in params:
            raise invalid_arg(f"{what}: shared_memory_byte_size and shared_memory_offset need "
                              f"shared_memory_region")
        return None
    if not isinstance(region, str) or not region:
        raise invalid_arg(f"{what}: shared_memory_region must be a region name")
    byte_size = params.get("shared_memory_byte_size")
    offset = params.get("shared_memory_offset", 0)
    if byte_size is None:
        raise invalid_arg(f"{what}: shared memory needs shared_memory_byte_size")
    for value, field in ((byte_size, "shared_memory_byte_size"),
                         (offset, "shared_memory_offset")):
        if not is_int(value) or not 0 <= value <= UINT64_MAX:
            raise invalid_arg(f"{what}: {field} must be an integer from 0 to {UINT64_MAX}")
    return SharedMemoryRef(region, offset, byte_size)


def _grpc_shared_memory(params, what: str) -> SharedMemoryRef | None:
    """The same parameters of a gRPC tensor (InferParameter map)."""
    if "shared_memory_region" not in params:
        if "shared_memory_byte_size" in params or "shared_memory_offset" in params:
            raise invalid_arg(f"{what}: shared_memory_byte_size and shared_memory_offset need "
                              f"shared_memory_region")
        return None
    region = params["shared_memory_region"]
    if region.WhichOneof("parameter_choice") != "string_param" or not region.string_param:
        raise invalid_arg(f"{what}: shared_memory_region must be a string parameter")
    values = []
    for field, required in (("shared_memory_offset", False), ("shared_memory_byte_size", True)):
        if field not in params:
            if required:
                raise invalid_arg(f"{what}: shared memory needs shared_memory_byte_size")
            values.append(0)
            continue
        param = params[field]
        choice = param.WhichOneof("parameter_choice")
        if choice not in ("int64_param", "uint64_param"):
            raise invalid_arg(f"{what}: {field} must be an integer parameter")
        value = getattr(param, choice)
        if value < 0:
            raise invalid_arg(f"{what}: {field} must not be negative")
        values.append(value)
    return SharedMemoryRef(region.string_param, values[0], values[1])


def parse_http_body(body: bytearray | bytes, header_length: bytes | None, model: str = "",
                    version: int = LATEST) -> V2Request:
    """The JSON part (all of the body, or its first
    Inference-Header-Content-Length bytes) and the binary part after it."""
    view = memoryview(body)
    if header_length is None:
        json_part, binary = view, view[len(view):]
    else:
        text = bytes(header_length).strip()
        if not text.isdigit() or len(text) > 19:
            raise invalid_arg("Inference-Header-Content-Length must be an integer")
        length = int(text)
        if length > len(view):
            raise invalid_arg(f"Inference-Header-Content-Length {length} exceeds the request "
                              f"body of {len(view)} bytes")
        json_part, binary = view[:length], view[length:]
    return request_from_json(load_json(json_part), binary, model, version)


def encode_response(response: InferenceResponse, request: V2Request
                    ) -> tuple[dict, list[bytes | memoryview]]:
    """(JSON document, binary output parts in order) of a successful
    response; the parts view the output tensors where they can
    (InferOutput.wire_view)."""
    binary_of = request.binary_outputs
    default = request.binary_default
    doc = {"model_name": response.model, "model_version": str(response.version)}
    if response.id:
        doc["id"] = response.id
    out_docs = []
    parts = []
    for output in response.outputs:
        datatype = output.datatype
        out = {"name": output.name, "datatype": datatype, "shape": list(output.shape)}
        shared = output.shared_memory
        if shared is not None:  # written into the region: no data here
            out["parameters"] = shared_memory_parameters(shared)
        elif binary_of.get(output.name, default):
            data = output.wire_view()
            out["parameters"] = {"binary_data_size": len(data)}
            parts.append(data)
        elif datatype == "BYTES":
            out["data"] = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                           for x in output.data.reshape(-1)]
        else:
            out["data"] = output.data.reshape(-1).tolist()
        out_docs.append(out)
    doc["outputs"] = out_docs
    return doc, parts


def shared_memory_parameters(ref: SharedMemoryRef) -> dict:
    """The parameters a response gives an output written into shared memory."""
    params = {"shared_memory_region": ref.region, "shared_memory_byte_size": ref.byte_size}
    if ref.offset:
        params["shared_memory_offset"] = ref.offset
    return params


# -- metadata, config, statistics, repository --------------------------------

def server_metadata(server) -> dict:
    return {"name": "pyserver", "version": server.version, "extensions": EXTENSIONS}


def model_metadata(metadata: ModelMetadata) -> dict:
    return {
        "name": metadata.name, "versions": [str(v) for v in metadata.versions],
        "platform": metadata.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape}
                   for t in metadata.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape}
                    for t in metadata.outputs],
    }


def model_config(config) -> dict:
    """The config (the repository's, v1 layout) as Triton's JSON of its v2 ModelConfig (the
    same field numbers: the v1 config is the v2 config's wire form): proto field names,
    every field without presence printed even when it holds its default
    (``"max_batch_size": 0``, ``"format": "FORMAT_NONE"``, empty lists), int64 as numbers,
    enums as their names; unset messages and unset oneof members left out."""
    return message_to_dict(v2_config(config), defaults=True)


def v2_config(config) -> "mc2.ModelConfig":
    """The repository's config (v1 layout) as the v2 ModelConfig message: the same field
    numbers, so the v1 config is the v2 config's wire form."""
    return mc2.ModelConfig.FromString(config.SerializeToString())


def message_to_dict(message, defaults: bool = False) -> dict:
    """``message`` as a JSON-ready dict of proto field names; with ``defaults``, fields
    without presence that hold their default too (protobuf's always-print-primitive-fields
    rule), recursively."""
    if not defaults:
        return {field.name: _field_value(field, value, False)
                for field, value in message.ListFields()}
    out = {}
    for field in message.DESCRIPTOR.fields:
        if not field.has_presence or message.HasField(field.name):
            out[field.name] = _field_value(field, getattr(message, field.name), True)
    return out


def _field_value(field, value, defaults: bool):
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {str(k): _value(value_field, v, defaults) for k, v in value.items()}
    if field.is_repeated:
        return [_value(field, v, defaults) for v in value]
    return _value(field, value, defaults)


def _value(field, value, defaults: bool = False):
    if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
        return message_to_dict(value, defaults)
    if field.type == descriptor.FieldDescriptor.TYPE_ENUM:
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if field.type == descriptor.FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def statistics(versions: list[VersionStatus]) -> dict:
    """ModelStatistics of the server API's version statuses."""
    return {"model_stats": [_version_stats(v) for v in versions]}


def _duration(count: int, ns: int) -> dict:
    return {"count": int(count), "ns": int(ns)}


def _version_stats(version: VersionStatus) -> dict:
    by_size = version.by_batch_size
    total = {k: sum(s[k] for s in by_size.values()) for k in (
        "success_count", "success_ns", "failed_count", "failed_ns", "queue_count", "queue_ns",
        "compute_count", "compute_ns")}
    return {
        "name": version.model, "version": str(version.version),
        "last_inference": version.last_inference_ms,
        "inference_count": version.inference_count, "execution_count": version.execution_count,
        "inference_stats": {
            "success": _duration(total["success_count"], total["success_ns"]),
            "fail": _duration(total["failed_count"], total["failed_ns"]),
            "queue": _duration(total["queue_count"], total["queue_ns"]),
            "compute_input": _duration(total["compute_count"], 0),
            "compute_infer": _duration(total["compute_count"], total["compute_ns"]),
            "compute_output": _duration(total["compute_count"], 0),
            "cache_hit": _duration(version.cache_hit_count, version.cache_hit_ns),
            "cache_miss": _duration(version.cache_miss_count, version.cache_miss_ns),
        },
        "batch_stats": [{"batch_size": size,
                         "compute_input": _duration(s["compute_count"], 0),
                         "compute_infer": _duration(s["compute_count"], s["compute_ns"]),
                         "compute_output": _duration(s["compute_count"], 0)}
                        for size, s in sorted(by_size.items()) if s["compute_count"]],
        "memory_usage": [],
    }


def repository_index(entries: list[IndexEntry]) -> list[dict]:
    out = []
    for e in entries:
        if e.version is None:
            entry = {"name": e.name}
            if e.state is not None:
                entry.update(state=e.state, reason=e.reason)
        else:
            entry = {"name": e.name, "version": str(e.version), "state": e.state,
                     "reason": e.reason}
        out.append(entry)
    return out


# -- gRPC ModelInferRequest -----------------------------------------------------

_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
             "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
             "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _parameter_value(parameter):
    """The value of a gRPC InferParameter (None when unset)."""
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def request_from_grpc(message) -> V2Request:
    """A ModelInferRequest as the V2Request the HTTP path builds: raw
    contents as binary tensors, typed contents as data lists; every output
    comes back raw."""
    raw = message.raw_input_contents
    shared = [_grpc_shared_memory(t.parameters, f"input '{t.name}'") if t.parameters else None
              for t in message.inputs]
    uses_shared_memory = any(ref is not None for ref in shared)
    in_body = len(message.inputs) - sum(ref is not None for ref in shared)
    if raw and len(raw) != in_body:
        raise invalid_arg(f"expected {in_body} raw_input_contents, got {len(raw)}")
    inputs = []
    position = 0
    for tensor, ref in zip(message.inputs, shared):
        if ref is not None:
            inputs.append(InferInput(tensor.name, tensor.datatype, list(tensor.shape),
                                     shared_memory=ref))
            continue
        if raw:
            data = memoryview(raw[position])
            position += 1
        else:
            field = _CONTENTS.get(tensor.datatype)
            if field is None:
                raise invalid_arg(f"input '{tensor.name}' of type {tensor.datatype[:32]} needs "
                                  f"raw_input_contents")
            data = list(getattr(tensor.contents, field))
        inputs.append(InferInput(tensor.name, tensor.datatype, list(tensor.shape), data))
    outputs = []
    for out in message.outputs:
        ref = _grpc_shared_memory(out.parameters, f"output '{out.name}'") \
            if out.parameters else None
        uses_shared_memory = uses_shared_memory or ref is not None
        cls = out.parameters["classification"].int64_param if "classification" in \
            out.parameters else 0
        if cls < 0:
            raise invalid_arg(f"output '{out.name}': classification must be >= 0")
        outputs.append(RequestedOutput(out.name, cls, ref))
    params = message.parameters
    priority = params["priority"].uint64_param if "priority" in params else 0
    timeout = params["timeout"].int64_param if "timeout" in params else 0
    sequence_id: int | str = 0
    if "sequence_id" in params:
        sequence_id = _parameter_value(params["sequence_id"])
        if isinstance(sequence_id, bool) or (isinstance(sequence_id, int) and sequence_id < 0) \
                or not isinstance(sequence_id, (int, str)):
            raise invalid_arg("parameter 'sequence_id' must be an unsigned 64-bit integer or "
                              "a string")
    flags = []
    for name in ("sequence_start", "sequence_end"):
        value = _parameter_value(params[name]) if name in params else False
        if not isinstance(value, bool):
            raise invalid_arg(f"parameter '{name}' must be a bool_param")
        flags.append(value)
    request = InferenceRequest(message.model_name, inputs, outputs,
                               version=parse_version(message.model_version), id=message.id,
                               priority=priority, timeout_us=timeout,
                               shared_memory=uses_shared_memory, sequence_id=sequence_id,
                               sequence_start=flags[0], sequence_end=flags[1])
    return V2Request(request, {}, True)
