"""v2 (KServe / Open Inference Protocol) translation: JSON inference
requests (with Triton's binary-tensor and classification extensions) into
the same plans and InferPayloads as v1, runtime results into v2 responses,
and the v2 metadata, config, statistics and repository documents.

No sockets here. A v2 request is validated by building the v1 request
header it is equivalent to and running it through ``v1_infer.build_plan``,
so both protocols share one validation, one payload type and one core path
(batching, statistics and metrics cannot differ).
"""

from __future__ import annotations

import base64
import json
import time

import numpy as np
from google.protobuf import descriptor

from pyserver import _core, tensors
from pyserver.errors import Code, ServerError, invalid_arg
from pyserver.protocol import v1_infer
from pyserver.protos import api_pb2
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss
from pyserver.repository.manager import ModelVersion
from pyserver.server import InferenceServer

EXTENSIONS = ["classification", "binary_tensor_data", "model_repository",
              "model_repository(unload_dependents)", "statistics", "model_configuration"]

# v1 DataType <-> v2 datatype name
V2_NAMES = {t: mc.DataType.Name(t)[len("TYPE_"):] for t in tensors.NUMPY_DTYPES}
V2_NAMES[mc.TYPE_STRING] = "BYTES"
V1_TYPES = {name: t for t, name in V2_NAMES.items()}

_STATES = {ss.MODEL_READY: "READY", ss.MODEL_LOADING: "LOADING",
           ss.MODEL_UNLOADING: "UNLOADING", ss.MODEL_UNAVAILABLE: "UNAVAILABLE"}


# Triton's mapping of error codes to HTTP statuses (http_server.cc).
def http_status(code: int) -> int:
    return {Code.INTERNAL: 500, Code.NOT_FOUND: 404, Code.UNAVAILABLE: 503,
            Code.UNSUPPORTED: 501}.get(code, 400)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


# -- inference ------------------------------------------------------------------

class V2Request:
    """A parsed v2 inference request: per input (name, datatype, shape,
    data) where data is a JSON list or a memoryview of binary bytes."""

    __slots__ = ("id", "inputs", "outputs", "binary_default", "parameters")

    def __init__(self, doc: dict, binary: memoryview) -> None:
        if not isinstance(doc, dict):
            raise invalid_arg("inference request must be a JSON object")
        self.id = doc.get("id")
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise invalid_arg("'parameters' must be a JSON object")
        self.parameters = params
        self.binary_default = bool(params.get("binary_data_output", False))
        raw_inputs = doc.get("inputs")
        if not isinstance(raw_inputs, list):
            raise invalid_arg("inference request must give 'inputs' as an array")
        self.inputs = []
        offset = 0
        for item in raw_inputs:
            if not isinstance(item, dict):
                raise invalid_arg("each input must be a JSON object")
            name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
            if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(
                    shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                            for d in shape):
                raise invalid_arg("each input needs 'name', 'datatype' and an integer 'shape'")
            in_params = item.get("parameters") or {}
            if "shared_memory_region" in in_params:
                raise ServerError(Code.UNSUPPORTED, f"input '{name}' uses shared memory: shared "
                                                    f"memory is not supported")
            size = in_params.get("binary_data_size")
            if size is not None:
                if not isinstance(size, int) or size < 0:
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
            self.inputs.append((name, datatype, shape, data))
        if offset != len(binary):
            raise invalid_arg(f"unexpected additional input data: {len(binary) - offset} bytes "
                              f"after the last binary input")
        self.outputs = []
        for item in doc.get("outputs") or []:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise invalid_arg("each requested output needs a 'name'")
            out_params = item.get("parameters") or {}
            if "shared_memory_region" in out_params:
                raise ServerError(Code.UNSUPPORTED, f"output '{item['name']}' uses shared "
                                                    f"memory: shared memory is not supported")
            cls = out_params.get("classification", 0)
            if not isinstance(cls, int) or cls < 0:
                raise invalid_arg(f"output '{item['name']}': classification must be a "
                                  f"non-negative integer")
            self.outputs.append((item["name"], cls,
                                 bool(out_params.get("binary_data", self.binary_default))))


def parse_http_body(body: bytearray | bytes, header_length: bytes | None) -> V2Request:
    """The JSON part (all of the body, or its first
    Inference-Header-Content-Length bytes) and the binary part after it."""
    view = memoryview(body)
    if header_length is None:
        json_part, binary = view, view[len(view):]
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise invalid_arg("Inference-Header-Content-Length must be an integer") from None
        if length < 0 or length > len(view):
            raise invalid_arg(f"Inference-Header-Content-Length {length} exceeds the request "
                              f"body of {len(view)} bytes")
        json_part, binary = view[:length], view[length:]
    try:
        doc = json.loads(bytes(json_part))
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_arg(f"failed to parse the request JSON buffer: {exc}") from None
    return V2Request(doc, binary)


def plan_for(version: ModelVersion, request: V2Request) -> v1_infer.InferPlan:
    """The cached v1 plan equivalent to ``request``; validates datatypes
    against the config and everything else through v1's build_plan."""
    key = ("v2", tuple((n, t, tuple(s)) for n, t, s, _ in request.inputs),
           tuple((n, c) for n, c, _ in request.outputs))
    plans = version.plans
    plan = plans.get(key)
    if plan is not None:
        return plan
    config = version.config
    batched = config.max_batch_size > 0
    config_inputs = {i.name: i for i in config.input}
    header = api_pb2.InferRequestHeader()
    batch_size = None
    for name, datatype, shape, _ in request.inputs:
        model_input = config_inputs.get(name)
        if model_input is None:
            raise invalid_arg(f"unexpected inference input '{name}' for model '{config.name}'")
        expected = V2_NAMES[model_input.data_type]
        if datatype != expected:
            raise invalid_arg(f"inference input '{name}' data-type is '{datatype}', but model "
                              f"'{config.name}' expects '{expected}'")
        dims = shape
        if batched:
            if not shape:
                raise invalid_arg(f"input '{name}' of batching model '{config.name}' needs a "
                                  f"batch dimension in its shape")
            if batch_size is not None and shape[0] != batch_size:
                raise invalid_arg(f"input '{name}' batch size {shape[0]} differs from the "
                                  f"other inputs' {batch_size}")
            batch_size = shape[0]
            dims = shape[1:]
        entry = header.input.add(name=name, dims=dims)
        if model_input.data_type == mc.TYPE_STRING:
            entry.batch_byte_size = 1  # sizes are checked per request
        if any(d < 0 for d in shape):
            raise invalid_arg(f"input '{name}' has a negative dimension in shape {shape}")
    header.batch_size = batch_size if batched and batch_size is not None else 1
    if batched and batch_size == 0:
        raise invalid_arg(f"inference request batch-size must be >= 1 for '{config.name}'")
    for name, cls, _ in request.outputs:
        out = header.output.add(name=name)
        if cls:
            out.cls.count = cls
    plan = v1_infer.build_plan(version, header)
    if len(plans) >= v1_infer.MAX_CACHED_PLANS:
        plans.clear()
    plans[key] = plan
    return plan


def payload(plan: v1_infer.InferPlan, request: V2Request) -> v1_infer.InferPayload:
    """The tensors of ``request`` in the shapes the plan validated."""
    by_name = {name: data for name, _, _, data in request.inputs}
    inputs = {}
    for spec in plan.inputs:
        data = by_name[spec.name]
        if isinstance(data, memoryview):
            if spec.data_type == mc.TYPE_STRING:
                array = tensors.deserialize_strings(data, spec.count, spec.name)
            else:
                expected = spec.count * spec.dtype.itemsize
                if len(data) != expected:
                    raise invalid_arg(f"unexpected size {len(data)} for input '{spec.name}', "
                                      f"expecting {expected}")
                array = np.frombuffer(data, dtype=spec.dtype)
        else:
            array = _json_array(spec, data)
        inputs[spec.name] = array.reshape(spec.shape)
    return v1_infer.InferPayload(inputs, plan.output_names, plan.shape_key, plan.priority,
                                 plan.timeout_us)


def _json_array(spec: v1_infer.InputPlan, data) -> np.ndarray:
    flat = _flatten(data)
    if len(flat) != spec.count:
        raise invalid_arg(f"unexpected number of elements {len(flat)} for input '{spec.name}', "
                          f"expecting {spec.count}")
    if spec.data_type == mc.TYPE_STRING:
        out = np.empty(len(flat), dtype=np.object_)
        for i, item in enumerate(flat):
            if isinstance(item, bytes):
                out[i] = item
            elif isinstance(item, str):
                out[i] = item.encode("utf-8")
            else:
                raise invalid_arg(f"input '{spec.name}' of type BYTES needs string elements")
        return out
    try:
        return np.array(flat, dtype=spec.dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise invalid_arg(f"input '{spec.name}': cannot convert the JSON data to "
                          f"{V2_NAMES[spec.data_type]}: {exc}") from None


def _flatten(data) -> list:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    out = []
    for item in data:
        out.extend(_flatten(item))
    return out


def build_response(plan: v1_infer.InferPlan, request: V2Request,
                   outputs: dict[str, np.ndarray]) -> tuple[dict, list[bytes]]:
    """(JSON document, binary output parts in order)."""
    binary_of = {name: binary for name, _, binary in request.outputs}
    version = plan.version
    doc = {"model_name": version.name, "model_version": str(version.version)}
    if request.id is not None:
        doc["id"] = request.id
    out_docs = []
    parts = []
    for spec in plan.outputs:
        array = outputs.get(spec.name)
        if array is None:
            raise ServerError(Code.INTERNAL, f"model did not produce output '{spec.name}'")
        array = v1_infer._checked_output(plan, spec, array)
        if spec.cls_count:
            array = _classify(array, spec, plan, version.labels.get(spec.name, ()))
            datatype = "BYTES"
        else:
            datatype = V2_NAMES[spec.data_type]
        out = {"name": spec.name, "datatype": datatype, "shape": list(array.shape)}
        if binary_of.get(spec.name, request.binary_default):
            data = (tensors.serialize_strings(array) if datatype == "BYTES"
                    else np.ascontiguousarray(array).tobytes())
            out["parameters"] = {"binary_data_size": len(data)}
            parts.append(data)
        elif datatype == "BYTES":
            out["data"] = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                           for x in array.reshape(-1)]
        else:
            out["data"] = array.reshape(-1).tolist()
        out_docs.append(out)
    doc["outputs"] = out_docs
    return doc, parts


def _classify(array: np.ndarray, spec: v1_infer.OutputPlan, plan: v1_infer.InferPlan,
              labels) -> np.ndarray:
    """Top-k per batch element as BYTES "value:index[:label]"."""
    rows = array.reshape(plan.batch_size if plan.batched else 1, -1)
    k = min(spec.cls_count, rows.shape[1])
    out = np.empty((rows.shape[0], k), dtype=np.object_)
    for r, row in enumerate(rows):
        top = np.argsort(-row.astype(np.float64), kind="stable")[:k]
        for j, idx in enumerate(top):
            idx = int(idx)
            text = f"{float(np.float32(row[idx])):f}:{idx}"
            if idx < len(labels):
                text += f":{labels[idx]}"
            out[r, j] = text.encode()
    return out if plan.batched else out.reshape(k)


# -- metadata, config, statistics, repository --------------------------------

def server_metadata(server: InferenceServer) -> dict:
    return {"name": "pyserver", "version": server.version, "extensions": EXTENSIONS}


def model_metadata(server: InferenceServer, model: str, version: int) -> dict:
    entry = server.repository.resolve(model, version)
    config = entry.config
    prefix = [-1] if config.max_batch_size > 0 else []
    found = server.repository.models.get(model)
    versions = [str(n) for n, v in sorted(found.versions.items())
                if v.state == ss.MODEL_READY] if found is not None else []
    return {
        "name": model, "versions": versions or [str(entry.version)],
        "platform": config.platform or config.backend,
        "inputs": [{"name": i.name, "datatype": V2_NAMES[i.data_type],
                    "shape": prefix + list(i.dims)} for i in config.input],
        "outputs": [{"name": o.name, "datatype": V2_NAMES[o.data_type],
                     "shape": prefix + list(o.dims)} for o in config.output],
    }


def model_config(server: InferenceServer, model: str, version: int) -> dict:
    """The config as Triton's JSON: proto field names, int64 as numbers,
    enums as their names."""
    return message_to_dict(server.repository.resolve(model, version).config)


def message_to_dict(message) -> dict:
    out = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        else:
            out[field.name] = _value(field, value)
    return out


def _value(field, value):
    if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
        return message_to_dict(value)
    if field.type == descriptor.FieldDescriptor.TYPE_ENUM:
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if field.type == descriptor.FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def statistics(server: InferenceServer, model: str = "", version: int = 0) -> dict:
    """ModelStatistics of every ready version (or of one model / version)
    from the core's counters."""
    models = server.repository.models
    if model and model not in models:
        raise ServerError(Code.NOT_FOUND, f"requested model '{model}' is not found")
    stats = []
    for name, entry in sorted(models.items()):
        if model and name != model:
            continue
        for number, v in sorted(entry.versions.items()):
            if version and number != version:
                continue
            if v.state != ss.MODEL_READY and not (model and version):
                continue
            stats.append(_version_stats(name, number, v))
    if model and version and not stats:
        raise ServerError(Code.NOT_FOUND, f"requested model '{model}' version {version} is "
                                          f"not found")
    return {"model_stats": stats}


def _duration(count: int, ns: int) -> dict:
    return {"count": int(count), "ns": int(ns)}


def _version_stats(name: str, number: int, version: ModelVersion) -> dict:
    snap = version.stats.snapshot()
    by_size = snap["by_batch_size"]
    total = {k: sum(s[k] for s in by_size.values()) for k in (
        "success_count", "success_ns", "failed_count", "failed_ns", "queue_count", "queue_ns",
        "compute_count", "compute_ns")}
    last_ms = 0
    if snap["last_inference_ns"]:
        age_ns = _core.monotonic_ns() - snap["last_inference_ns"]
        last_ms = (time.time_ns() - age_ns) // 1_000_000
    zero = _duration(0, 0)
    return {
        "name": name, "version": str(number), "last_inference": last_ms,
        "inference_count": snap["inference_count"], "execution_count": snap["execution_count"],
        "inference_stats": {
            "success": _duration(total["success_count"], total["success_ns"]),
            "fail": _duration(total["failed_count"], total["failed_ns"]),
            "queue": _duration(total["queue_count"], total["queue_ns"]),
            "compute_input": _duration(total["compute_count"], 0),
            "compute_infer": _duration(total["compute_count"], total["compute_ns"]),
            "compute_output": _duration(total["compute_count"], 0),
            "cache_hit": zero, "cache_miss": zero,
        },
        "batch_stats": [{"batch_size": size,
                         "compute_input": _duration(s["compute_count"], 0),
                         "compute_infer": _duration(s["compute_count"], s["compute_ns"]),
                         "compute_output": _duration(s["compute_count"], 0)}
                        for size, s in sorted(by_size.items()) if s["compute_count"]],
        "memory_usage": [],
    }


def repository_index(server: InferenceServer, ready_only: bool = False) -> list[dict]:
    out = []
    repository = server.repository
    for name, loaded in repository.index():
        model = repository.models.get(name)
        if model is None or not model.versions:
            if not ready_only:
                entry = {"name": name}
                if model is not None and model.error:
                    entry.update(state="UNAVAILABLE", reason=model.error)
                out.append(entry)
            continue
        for number, v in sorted(model.versions.items()):
            if ready_only and v.state != ss.MODEL_READY:
                continue
            entry = {"name": name, "version": str(number), "state": _STATES.get(v.state, "UNKNOWN")}
            entry["reason"] = v.reason
            out.append(entry)
    return out


# -- gRPC ModelInferRequest -----------------------------------------------------

_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
             "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
             "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def request_from_grpc(message) -> V2Request:
    """A ModelInferRequest as the V2Request the HTTP path builds: raw
    contents as binary tensors, typed contents as data lists; every output
    comes back raw."""
    request = V2Request.__new__(V2Request)
    request.id = message.id or None
    request.parameters = {}
    request.binary_default = True
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise invalid_arg(f"expected {len(message.inputs)} raw_input_contents, got {len(raw)}")
    request.inputs = []
    for i, tensor in enumerate(message.inputs):
        if "shared_memory_region" in tensor.parameters:
            raise ServerError(Code.UNSUPPORTED, f"input '{tensor.name}' uses shared memory: "
                                                f"shared memory is not supported")
        if raw:
            data = memoryview(raw[i])
        else:
            field = _CONTENTS.get(tensor.datatype)
            if field is None:
                raise invalid_arg(f"input '{tensor.name}' of type {tensor.datatype} needs "
                                  f"raw_input_contents")
            data = list(getattr(tensor.contents, field))
        request.inputs.append((tensor.name, tensor.datatype, list(tensor.shape), data))
    request.outputs = []
    for out in message.outputs:
        if "shared_memory_region" in out.parameters:
            raise ServerError(Code.UNSUPPORTED, f"output '{out.name}' uses shared memory: "
                                                f"shared memory is not supported")
        cls = out.parameters["classification"].int64_param if "classification" in \
            out.parameters else 0
        if cls < 0:
            raise invalid_arg(f"output '{out.name}': classification must be >= 0")
        request.outputs.append((out.name, cls, True))
    return request
