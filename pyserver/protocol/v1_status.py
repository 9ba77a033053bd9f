"""v1 ServerStatus (the whole server, or one model) and the model
repository index."""

from __future__ import annotations

import time

from google.protobuf import json_format, text_format

from pyserver import _core
from pyserver.errors import invalid_arg
from pyserver.protos import server_status_pb2 as ss
from pyserver.repository import config as cfg
from pyserver.repository.manager import Model, ModelVersion
from pyserver.server import InferenceServer


def server_status(server: InferenceServer, model_name: str = "") -> ss.ServerStatus:
    """Raises ServerError(INVALID_ARG) for an unknown ``model_name``."""
    status = ss.ServerStatus(id=server.id, version=server.version,
                             uptime_ns=time.time_ns() - server.start_ns,
                             ready_state=int(server.state))
    models = server.repository.models
    if model_name:
        model = models.get(model_name)
        if model is None:
            raise invalid_arg(f"no status available for unknown model '{model_name}'")
        _fill_model(status.model_status[model_name], model)
    else:
        for name, model in list(models.items()):
            _fill_model(status.model_status[name], model)
    return status


def repository_index(server: InferenceServer) -> ss.ModelRepositoryIndex:
    """Every model folder of the store and every loaded model, sorted by
    name (loaded or not: v1's index has no state)."""
    index = ss.ModelRepositoryIndex()
    for name, _ in server.repository.index():
        index.models.add(name=name)
    return index


def _fill_model(out: ss.ModelStatus, model: Model) -> None:
    if model.config is None:
        out.config.name = model.name
        try:
            versions = cfg.versions_on_disk(model.path)
        except OSError:
            versions = []
        for version in versions:
            entry = out.version_status[version]
            entry.ready_state = ss.MODEL_UNAVAILABLE
            entry.ready_state_reason.message = model.error
        return
    out.config.CopyFrom(model.config)
    for version, entry in list(model.versions.items()):
        _fill_version(out.version_status[version], entry)


def _fill_version(out: ss.ModelVersionStatus, version: ModelVersion) -> None:
    out.ready_state = version.state
    if version.reason:
        out.ready_state_reason.message = version.reason
    snapshot = version.stats.snapshot()
    out.model_execution_count = snapshot["execution_count"]
    out.model_inference_count = snapshot["inference_count"]
    if snapshot["last_inference_ns"]:
        age_ns = _core.monotonic_ns() - snapshot["last_inference_ns"]
        out.last_inference_timestamp_milliseconds = (time.time_ns() - age_ns) // 1_000_000
    for batch_size, s in snapshot["by_batch_size"].items():
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
