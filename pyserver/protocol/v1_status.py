"""v1 ServerStatus (the whole server, or one model) and the model
repository index, from the server API's status."""

from __future__ import annotations

import time

from google.protobuf import json_format, text_format

from pyserver.api.status import ModelStatus, VersionStatus
from pyserver.errors import Code, ServerError, invalid_arg
from pyserver.protos import server_status_pb2 as ss

_STATES = {"READY": ss.MODEL_READY, "LOADING": ss.MODEL_LOADING,
           "UNLOADING": ss.MODEL_UNLOADING, "UNAVAILABLE": ss.MODEL_UNAVAILABLE}


def server_status(server, model_name: str = "") -> ss.ServerStatus:
    """Raises ServerError(INVALID_ARG) for an unknown ``model_name``."""
    status = ss.ServerStatus(id=server.id, version=server.version,
                             uptime_ns=time.time_ns() - server.start_ns,
                             ready_state=int(server.state))
    try:
        models = server.model_status(model_name)
    except ServerError as exc:
        if exc.code == Code.NOT_FOUND:
            raise invalid_arg(exc.message) from None
        raise
    for model in models:
        _fill_model(status.model_status[model.name], model)
    return status


def repository_index(server) -> ss.ModelRepositoryIndex:
    """Every model folder of the store and every loaded model, sorted by
    name (loaded or not: v1's index has no state)."""
    index = ss.ModelRepositoryIndex()
    names = []
    for entry in server.index():
        if not names or names[-1] != entry.name:
            names.append(entry.name)
    for name in names:
        index.models.add(name=name)
    return index


def _fill_model(out: ss.ModelStatus, model: ModelStatus) -> None:
    if model.config is None:
        out.config.name = model.name
    else:
        out.config.CopyFrom(model.config)
    for version in model.versions:
        _fill_version(out.version_status[version.version], version)


def _fill_version(out: ss.ModelVersionStatus, version: VersionStatus) -> None:
    out.ready_state = _STATES.get(version.state, ss.MODEL_UNKNOWN)
    if version.reason:
        out.ready_state_reason.message = version.reason
    out.model_execution_count = version.execution_count
    out.model_inference_count = version.inference_count
    if version.last_inference_ms:
        out.last_inference_timestamp_milliseconds = version.last_inference_ms
    for batch_size, s in version.by_batch_size.items():
        stats = out.infer_stats[batch_size]
        stats.success.count, stats.success.total_time_ns = s["success_count"], s["success_ns"]
        stats.failed.count, stats.failed.total_time_ns = s["failed_count"], s["failed_ns"]
        stats.compute.count, stats.compute.total_time_ns = s["compute_count"], s["compute_ns"]
        stats.queue.count, stats.queue.total_time_ns = s["queue_count"], s["queue_ns"]


def encode(status: ss.ServerStatus, fmt: str) -> tuple[bytes, str]:
    """(body, content type) for ``format=text|binary|json``."""
    if fmt == "binary":
        return status.SerializeToString(), "application/octet-stream"
    if fmt == "json":
        return (json_format.MessageToJson(status, preserving_proto_field_name=True).encode(),
                "application/json")
    return text_format.MessageToString(status).encode(), "text/plain"
