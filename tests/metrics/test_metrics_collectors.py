"""pyserver.metrics without sockets: the text format, the model collector's
labels, and the GPU collector over a stand-in for NVML."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from google.protobuf import text_format
from prometheus_client.core import HistogramMetricFamily, Metric
from pyserver import _core, metrics
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss


# -- the text format ----------------------------------------------------------------

def test_counter_keeps_its_name_without_total():
    counter = Metric("nv_inference_count", "Number of inferences performed", "counter")
    counter.add_sample("nv_inference_count", {"model": "m", "version": "1"}, 7)
    assert metrics.exposition([counter]).decode() == (
        "# HELP nv_inference_count Number of inferences performed\n"
        "# TYPE nv_inference_count counter\n"
        'nv_inference_count{model="m",version="1"} 7\n')


def test_integers_stay_integers_and_floats_are_go_style():
    gauge = Metric("g", "doc", "gauge")
    gauge.add_sample("g", {}, 12345678901234)
    gauge.add_sample("g", {"x": "y"}, 0.25)
    lines = metrics.exposition([gauge]).decode().splitlines()
    assert lines[2:] == ["g 12345678901234", 'g{x="y"} 0.25']


def test_label_values_and_help_are_escaped():
    gauge = Metric("g", 'a\\b\nc', "gauge")
    gauge.add_sample("g", {"v": 'q"uo\\te\nx'}, 1)
    text = metrics.exposition([gauge]).decode()
    assert "# HELP g a\\\\b\\nc\n" in text
    assert 'g{v="q\\"uo\\\\te\\nx"} 1\n' in text


def test_histogram_family_is_written_as_histogram():
    family = HistogramMetricFamily("h", "doc")
    family.add_sample("h_bucket", {"le": "+Inf"}, 2)
    family.add_sample("h_count", {}, 2)
    family.add_sample("h_sum", {}, 3.5)
    assert "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 3.5\n" in \
        metrics.exposition([family]).decode()


@pytest.mark.parametrize("key, label", [("team", "_team"), ("cost-center", "_cost_center"),
                                        ("a.b c", "_a_b_c")])
def test_metric_tag_keys_become_valid_label_names(key, label):
    assert metrics.tag_label(key) == label


# -- the model collector ------------------------------------------------------------------

def _version(name: str, config_text: str, state: int = ss.MODEL_READY):
    config = text_format.Parse(config_text, mc.ModelConfig())
    return SimpleNamespace(name=name, version=1, state=state, config=config,
                           stats=_core.ModelStats(),
                           cache_responses=config.response_cache.enable)


def _families(versions, gpu_uuids=None, response_cache=None) -> dict[str, Metric]:
    models = {v.name: SimpleNamespace(versions={1: v}) for v in versions}
    server = SimpleNamespace(repository=SimpleNamespace(models=models),
                             response_cache=response_cache)
    return {f.name: f for f in metrics.ModelMetrics(server, gpu_uuids).collect()}


def _collect(versions, gpu_uuids=None) -> dict:
    success = _families(versions, gpu_uuids)["nv_inference_request_success"]
    return {s.labels["model"]: s.labels for s in success.samples}


def test_version_on_one_gpu_is_labelled_with_its_uuid():
    labels = _collect([_version("g", 'instance_group [ { kind: KIND_GPU gpus: [ 1 ] count: 2 } ]')],
                      {0: "GPU-zero", 1: "GPU-one"})
    assert labels["g"] == {"model": "g", "version": "1", "gpu_uuid": "GPU-one"}


@pytest.mark.parametrize("groups", [
    'instance_group [ { kind: KIND_CPU } ]',
    'instance_group [ { kind: KIND_GPU gpus: [ 0, 1 ] } ]',
    'instance_group [ { kind: KIND_GPU gpus: [ 0 ] }, { kind: KIND_CPU } ]'])
def test_cpu_or_multi_gpu_versions_have_no_gpu_uuid(groups):
    labels = _collect([_version("m", groups)], {0: "GPU-zero", 1: "GPU-one"})
    assert "gpu_uuid" not in labels["m"]


def test_only_serving_versions_are_reported():
    labels = _collect([_version("ready", ""), _version("loading", "", ss.MODEL_LOADING),
                       _version("failed", "", ss.MODEL_UNAVAILABLE),
                       _version("draining", "", ss.MODEL_UNLOADING)])
    assert sorted(labels) == ["draining", "ready"]


# -- the GPU collector --------------------------------------------------------------------

class FakeNvml:
    """The slice of pynvml that GpuMetrics uses, for two devices; device 1
    does not report power."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: int = 2, fail_init: bool = False) -> None:
        self.devices = devices
        self.fail_init = fail_init
        self.energy_mj = [1000, 5000]

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self):
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle}".encode()

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=37 + handle, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=80 * 2**30, used=2**30 * (handle + 1), free=0)

    def nvmlDeviceGetPowerUsage(self, handle):
        if handle == 1:
            raise self.NVMLError("Not Supported")
        return 123456

    def nvmlDeviceGetPowerManagementLimit(self, handle):
        return 300000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.energy_mj[handle]


def _gpu_samples(collector) -> dict:
    return {(s.name, s.labels["gpu_uuid"]): s.value
            for family in collector.collect() for s in family.samples}


def test_gpu_gauges_per_device():
    nvml = FakeNvml()
    collector = metrics.GpuMetrics.create(nvml)
    nvml.energy_mj = [3000, 5500]
    samples = _gpu_samples(collector)
    assert samples[("nv_gpu_utilization", "GPU-0")] == pytest.approx(0.37)
    assert samples[("nv_gpu_memory_total_bytes", "GPU-1")] == 80 * 2**30
    assert samples[("nv_gpu_memory_used_bytes", "GPU-1")] == 2 * 2**30
    assert samples[("nv_gpu_power_usage", "GPU-0")] == pytest.approx(123.456)
    assert samples[("nv_gpu_power_limit", "GPU-0")] == pytest.approx(300.0)
    assert samples[("nv_energy_consumption", "GPU-0")] == pytest.approx(2.0)
    assert samples[("nv_energy_consumption", "GPU-1")] == pytest.approx(0.5)


def test_unsupported_gpu_query_is_left_out():
    samples = _gpu_samples(metrics.GpuMetrics.create(FakeNvml()))
    assert ("nv_gpu_power_usage", "GPU-1") not in samples
    assert ("nv_gpu_power_limit", "GPU-1") in samples


def test_gpu_families_keep_v1_names_and_types():
    collector = metrics.GpuMetrics.create(FakeNvml())
    assert {f.name: f.type for f in collector.collect()} == {
        "nv_gpu_utilization": "gauge", "nv_gpu_memory_total_bytes": "gauge",
        "nv_gpu_memory_used_bytes": "gauge", "nv_gpu_power_usage": "gauge",
        "nv_gpu_power_limit": "gauge", "nv_energy_consumption": "counter"}


def test_uuids_by_device_index():
    assert metrics.GpuMetrics.create(FakeNvml()).uuid_by_index() == {0: "GPU-0", 1: "GPU-1"}


@pytest.mark.parametrize("nvml", [FakeNvml(fail_init=True), FakeNvml(devices=0)])
def test_no_driver_or_no_device_means_no_gpu_collector(nvml):
    assert metrics.GpuMetrics.create(nvml) is None


# -- response cache families -----------------------------------------------------------------

def test_cache_families_are_absent_without_a_response_cache():
    families = _families([_version("c", "response_cache { enable: true }")])
    assert not any(name.startswith("nv_cache_") for name in families)


def test_cache_families_count_hits_and_misses_of_caching_versions_in_microseconds():
    cached = _version("c", "response_cache { enable: true }")
    cached.stats.record_cache_hit(1, 1_000, 9_000, 2_500)
    cached.stats.record_cache_hit(1, 10_000, 12_000, 1_500)
    cached.stats.record_cache_miss(7_999)
    plain = _version("p", "")
    families = _families([cached, plain], response_cache=object())
    values = {name: {s.labels["model"]: s.value for s in families[name].samples}
              for name in ("nv_cache_num_hits_per_model", "nv_cache_num_misses_per_model",
                           "nv_cache_hit_duration_per_model",
                           "nv_cache_miss_duration_per_model", "nv_inference_request_success",
                           "nv_inference_exec_count")}
    assert values["nv_cache_num_hits_per_model"] == {"c": 2}
    assert values["nv_cache_num_misses_per_model"] == {"c": 1}
    assert values["nv_cache_hit_duration_per_model"] == {"c": 4}
    assert values["nv_cache_miss_duration_per_model"] == {"c": 7}
    assert values["nv_inference_request_success"] == {"c": 2, "p": 0}
    assert values["nv_inference_exec_count"] == {"c": 0, "p": 0}
    assert all(families[name].type == "counter" for name in values)
