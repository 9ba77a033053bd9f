"""Prometheus metrics on ``/metrics`` (facts §4).

Everything is computed at scrape time: the model collector reads each
version's core statistics (``ModelStats.snapshot()``, one per-version mutex
held for a copy), so serving a request costs nothing extra and no lock is
shared between models. The GPU collector asks NVML at scrape time too.

Exposed families:

- v1's, with v1's names, types and labels: ``nv_inference_request_success``,
  ``nv_inference_request_failure``, ``nv_inference_count``,
  ``nv_inference_exec_count``, ``nv_inference_request_duration_us``,
  ``nv_inference_queue_duration_us``, ``nv_inference_compute_duration_us``
  (counters; labels ``model``, ``version``, ``gpu_uuid`` for a version whose
  instances are all on one GPU, and ``_<key>`` for each ``metric_tags``
  entry; ``nv_inference_request_failure`` also has Triton's
  ``reason="CANCELED"`` sample: requests cancelled while queued, a part of
  the total), and where NVML finds a device ``nv_gpu_utilization``,
  ``nv_gpu_memory_total_bytes``, ``nv_gpu_memory_used_bytes``,
  ``nv_gpu_power_usage``, ``nv_gpu_power_limit`` (gauges) and
  ``nv_energy_consumption`` (counter), labelled ``gpu_uuid``.
- Triton's response cache families, while the server has a response cache
  (``--cache-size``), for the versions whose config enables it:
  ``nv_cache_num_hits_per_model``, ``nv_cache_num_misses_per_model``,
  ``nv_cache_hit_duration_per_model`` and
  ``nv_cache_miss_duration_per_model`` (counters, microseconds, the same
  labels). A hit counts in ``nv_inference_request_success`` and the request
  and queue durations, not in the inference or execution counts, nor in
  compute time (as Triton counts it).
- ours: ``pyserver_request_duration_us``, ``pyserver_queue_duration_us`` and
  ``pyserver_compute_duration_us``, histograms of successful requests with the
  core's bucket bounds (``_core.latency_buckets_us()``), same labels.

Not provided: ``nv_inference_load_ratio``. It needs each request's
request/compute ratio, which the core does not keep; the histograms above
give the distributions it summarised.

Counters keep v1's names exactly (no ``_total``): prometheus-client's text
writer appends ``_total`` to counter families, so ``exposition`` writes the
0.0.4 text format itself from prometheus-client's metric objects.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Iterator

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from pyserver import _core
from pyserver.http.connection import RequestCycle
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss
from pyserver.server import InferenceServer

log = logging.getLogger("pyserver.metrics")

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_MODEL_COUNTERS = (
    # name, help, value from a snapshot
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     lambda s: _total(s, "success_count")),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes",
     lambda s: _total(s, "failed_count")),
    ("nv_inference_count", "Number of inferences performed",
     lambda s: s["inference_count"]),
    ("nv_inference_exec_count", "Number of model executions performed",
     lambda s: s["execution_count"]),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds",
     lambda s: _total(s, "success_ns") // 1000),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds",
     lambda s: _total(s, "queue_ns") // 1000),
    ("nv_inference_compute_duration_us", "Cumulative inference compute duration in microseconds",
     lambda s: _total(s, "compute_ns") // 1000),
)

_CACHE_COUNTERS = (
    ("nv_cache_num_hits_per_model", "Number of response cache hits per model",
     lambda s: s["cache_hit_count"]),
    ("nv_cache_num_misses_per_model", "Number of response cache misses per model",
     lambda s: s["cache_miss_count"]),
    ("nv_cache_hit_duration_per_model",
     "Cumulative time requests spend retrieving a cached response per model on cache hits "
     "(microseconds)",
     lambda s: s["cache_hit_ns"] // 1000),
    ("nv_cache_miss_duration_per_model",
     "Cumulative time requests spend looking up and inserting responses into the cache on a "
     "cache miss (microseconds)",
     lambda s: s["cache_miss_ns"] // 1000),
)

# Triton (2.4x) labels nv_inference_request_failure with a ``reason``; the
# sample without one is v1's total of every failure, cancelled ones included.
_FAILURE_REASONS = (
    ("CANCELED", lambda s: s.get("cancelled_count", 0)),
)

_MODEL_HISTOGRAMS = (
    ("pyserver_request_duration_us", "request_latency",
     "Duration of successful inference requests in microseconds, from receipt to computed"),
    ("pyserver_queue_duration_us", "queue_latency",
     "Time successful inference requests waited in the queue, in microseconds"),
    ("pyserver_compute_duration_us", "compute_latency",
     "Compute time of successful inference requests in microseconds"),
)

_SERVING_STATES = (ss.MODEL_READY, ss.MODEL_UNLOADING)
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _total(snapshot: dict, key: str) -> int:
    return sum(s[key] for s in snapshot["by_batch_size"].values())


def tag_label(key: str) -> str:
    """The label a ``metric_tags`` key becomes: ``_<key>``, with characters
    Prometheus does not allow in label names replaced by ``_``."""
    return "_" + _LABEL_NAME.sub("_", key)


class ModelMetrics(Collector):
    """Per-model-version families, from the core's statistics."""

    def __init__(self, server: InferenceServer, gpu_uuids: dict[int, str] | None = None) -> None:
        self.server = server
        self.gpu_uuids = gpu_uuids or {}
        buckets = [floatToGoString(b) for b in _core.latency_buckets_us()]
        self._bucket_bounds = buckets + ["+Inf"]

    def collect(self) -> Iterator[Metric]:
        counters = [Metric(name, doc, "counter") for name, doc, _ in _MODEL_COUNTERS]
        histograms = [HistogramMetricFamily(name, doc) for name, _, doc in _MODEL_HISTOGRAMS]
        caching = self.server.response_cache is not None
        cache_counters = [Metric(name, doc, "counter") for name, doc, _ in _CACHE_COUNTERS] \
            if caching else []
        for version in self._serving_versions():
            labels = self._labels(version)
            snapshot = version.stats.snapshot()
            for family, (name, _, value) in zip(counters, _MODEL_COUNTERS):
                family.add_sample(name, labels, value(snapshot))
                if name == "nv_inference_request_failure":
                    for reason, count in _FAILURE_REASONS:
                        family.add_sample(name, {**labels, "reason": reason}, count(snapshot))
            for family, (name, key, _) in zip(histograms, _MODEL_HISTOGRAMS):
                self._add_histogram(family, name, labels, snapshot[key])
            if caching and version.cache_responses:
                for family, (name, _, value) in zip(cache_counters, _CACHE_COUNTERS):
                    family.add_sample(name, labels, value(snapshot))
        yield from counters
        yield from cache_counters
        yield from histograms

    def _serving_versions(self) -> Iterator:
        for model in list(self.server.repository.models.values()):
            for version in list(model.versions.values()):
                if version.state in _SERVING_STATES:
                    yield version

    def _labels(self, version) -> dict[str, str]:
        labels = {"model": version.name, "version": str(version.version)}
        uuid = self._gpu_uuid(version.config)
        if uuid:
            labels["gpu_uuid"] = uuid
        for key, value in sorted(version.config.metric_tags.items()):
            labels[tag_label(key)] = value
        return labels

    def _gpu_uuid(self, config: mc.ModelConfig) -> str:
        """The one GPU all instances run on, if so. Statistics are kept per
        version, not per instance, so a version spread over several GPUs
        (or mixing CPU and GPU) gets no gpu_uuid label."""
        devices = set()
        for group in config.instance_group:
            if group.kind != mc.ModelInstanceGroup.KIND_GPU:
                return ""
            devices.update(group.gpus)
        if len(devices) != 1:
            return ""
        return self.gpu_uuids.get(devices.pop(), "")

    def _add_histogram(self, family: Metric, name: str, labels: dict[str, str],
                       histogram: dict) -> None:
        cumulative = 0
        for bound, count in zip(self._bucket_bounds, histogram["counts"]):
            cumulative += count
            family.add_sample(f"{name}_bucket", {**labels, "le": bound}, cumulative)
        family.add_sample(f"{name}_count", labels, cumulative)
        family.add_sample(f"{name}_sum", labels, histogram["sum_ns"] / 1000)


class GpuMetrics(Collector):
    """NVML gauges per GPU. Build it with ``GpuMetrics.create()``, which
    returns None where NVML is missing or sees no device."""

    def __init__(self, nvml, handles: list) -> None:
        self.nvml = nvml
        self.handles = handles
        self.uuids = [self._uuid(h) for h in handles]
        self._energy_base = [self._call(nvml.nvmlDeviceGetTotalEnergyConsumption, h)
                             for h in handles]

    @classmethod
    def create(cls, nvml=None) -> "GpuMetrics | None":
        """``nvml`` is the pynvml module (imported here when not given)."""
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                log.info("GPU metrics: pynvml is not installed; no GPU metrics")
                return None
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # NVMLError and friends: no driver, no device
            log.info("GPU metrics: NVML unavailable (%s); no GPU metrics", exc)
            return None
        if not handles:
            log.info("GPU metrics: NVML finds no GPU; no GPU metrics")
            return None
        return cls(nvml, handles)

    def uuid_by_index(self) -> dict[int, str]:
        return dict(enumerate(self.uuids))

    def collect(self) -> Iterator[Metric]:
        nvml = self.nvml
        families = {
            "util": Metric("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge"),
            "total": Metric("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge"),
            "used": Metric("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge"),
            "power": Metric("nv_gpu_power_usage", "GPU power usage in watts", "gauge"),
            "limit": Metric("nv_gpu_power_limit", "GPU power management limit in watts", "gauge"),
            "energy": Metric("nv_energy_consumption",
                             "GPU energy consumption in joules since the server started",
                             "counter"),
        }
        for handle, uuid, base in zip(self.handles, self.uuids, self._energy_base):
            labels = {"gpu_uuid": uuid}
            util = self._call(nvml.nvmlDeviceGetUtilizationRates, handle)
            if util is not None:
                families["util"].add_sample("nv_gpu_utilization", labels, util.gpu * 0.01)
            memory = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is not None:
                families["total"].add_sample("nv_gpu_memory_total_bytes", labels, memory.total)
                families["used"].add_sample("nv_gpu_memory_used_bytes", labels, memory.used)
            power = self._call(nvml.nvmlDeviceGetPowerUsage, handle)
            if power is not None:
                families["power"].add_sample("nv_gpu_power_usage", labels, power * 0.001)
            limit = self._call(nvml.nvmlDeviceGetPowerManagementLimit, handle)
            if limit is not None:
                families["limit"].add_sample("nv_gpu_power_limit", labels, limit * 0.001)
            energy = self._call(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
            if energy is not None and base is not None:
                families["energy"].add_sample("nv_energy_consumption", labels,
                                              (energy - base) * 0.001)
        yield from families.values()

    def _uuid(self, handle) -> str:
        uuid = self._call(self.nvml.nvmlDeviceGetUUID, handle)
        if uuid is None:
            return "unknown"
        return uuid.decode() if isinstance(uuid, bytes) else str(uuid)

    @staticmethod
    def _call(function, handle):
        """One NVML query; None when the device does not support it."""
        try:
            return function(handle)
        except Exception:
            return None


def build_registry(server: InferenceServer, gpu_metrics: bool = True) -> CollectorRegistry:
    """The registry ``/metrics`` serves: model families, plus GPU families
    when ``gpu_metrics`` and NVML finds a device."""
    registry = CollectorRegistry(auto_describe=False)
    gpus = GpuMetrics.create() if gpu_metrics else None
    if gpus is not None:
        registry.register(gpus)
    registry.register(ModelMetrics(server, gpus.uuid_by_index() if gpus else None))
    return registry


# -- the text format --------------------------------------------------------------

def exposition(metrics: Iterable[Metric]) -> bytes:
    """Prometheus text format 0.0.4 of ``metrics``, every sample under the
    name it was added with (counters keep v1's names); integer values are
    written as integers."""
    out = []
    for metric in metrics:
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        kind = "untyped" if metric.type == "unknown" else metric.type
        out.append(f"# HELP {metric.name} {doc}\n# TYPE {metric.name} {kind}\n")
        for sample in metric.samples:
            out.append(_sample_line(sample.name, sample.labels, sample.value))
    return "".join(out).encode()


def _sample_line(name: str, labels: dict[str, str], value: float) -> str:
    number = str(value) if isinstance(value, int) else floatToGoString(value)
    if not labels:
        return f"{name} {number}\n"
    text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
    return f"{name}{{{text}}} {number}\n"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


# -- the HTTP endpoint -------------------------------------------------------------

class MetricsApp:
    """``GET /metrics`` (or ``/metrics/``) on the metrics port; another
    method gets 405, another path 400, as v1's listener answered."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def handle(self, cycle: RequestCycle) -> None:
        if cycle.path not in (b"/metrics", b"/metrics/"):
            return cycle.respond(400, [(b"content-type", b"text/plain")],
                                 b"unknown path; metrics are served at /metrics")
        if cycle.method != b"GET":
            return cycle.respond(405, [(b"content-type", b"text/plain")], b"method not allowed")
        cycle.respond(200, [(b"content-type", CONTENT_TYPE)], exposition(self.registry.collect()))
