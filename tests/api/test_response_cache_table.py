"""pyserver.response_cache without sockets or runtimes: keys built from real
plans and payloads (pyserver.api.plan) of model versions made from configs,
and the LRU table's bounds, eviction, copies and drops."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from pyserver import _core
from pyserver.api.plan import plan_for
from pyserver.api.request import InferenceRequest, InferInput, RequestedOutput
from pyserver.api.response import InferOutput
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss
from pyserver.repository import config as cfg
from pyserver.repository.manager import ModelVersion
from pyserver.response_cache import ENTRY_OVERHEAD_BYTES, ResponseCache

CONFIG = """
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "S" data_type: TYPE_STRING dims: [ 2 ] } ]
output [ { name: "P" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "Q" data_type: TYPE_FP32 dims: [ 4 ] } ]
response_cache { enable: true }
"""


K = _core.CacheKey


def _version() -> ModelVersion:
    config = cfg.normalize(text_format.Parse(CONFIG, mc.ModelConfig()))
    version = ModelVersion("m", 1, config, labels={})
    version.state = ss.MODEL_READY
    return version


def _request(a=(1.0, 2.0, 3.0, 4.0), s=(b"x", b"yz"), outputs=(), reverse=False,
             as_list=False) -> InferenceRequest:
    a = np.array([a], dtype=np.float32)
    s_data = np.array([s], dtype=np.object_)
    inputs = [InferInput("A", "FP32", a.shape, a.tolist() if as_list else a.tobytes()),
              InferInput("S", "BYTES", s_data.shape, [[x.decode() for x in s]] if as_list
                         else s_data)]
    return InferenceRequest("m", inputs[::-1] if reverse else inputs, outputs)


def _key(cache: ResponseCache, version: ModelVersion, request: InferenceRequest):
    plan = plan_for(version, request)
    return cache.key(plan, plan.payload(request))


def _outputs(value: float = 0.5, size: int = 4) -> list[InferOutput]:
    return [InferOutput("P", "FP32", np.full((1, size), value, np.float32))]


# -- keys --------------------------------------------------------------------------------

def test_json_and_binary_data_of_the_same_tensors_share_a_key():
    cache, version = ResponseCache(1 << 20), _version()
    assert _key(cache, version, _request()) == _key(cache, version, _request(as_list=True))


def test_the_order_inputs_are_listed_in_does_not_change_the_key():
    cache, version = ResponseCache(1 << 20), _version()
    assert _key(cache, version, _request()) == _key(cache, version, _request(reverse=True))


@pytest.mark.parametrize("changed", [
    {"a": (1.0, 2.0, 3.0, 4.5)},
    {"s": (b"xy", b"z")},  # the same bytes, split otherwise
    {"outputs": (RequestedOutput("Q"),)},
    {"outputs": (RequestedOutput("P", classification=2),)}])
def test_any_other_data_or_requested_output_changes_the_key(changed):
    cache, version = ResponseCache(1 << 20), _version()
    assert _key(cache, version, _request()) != _key(cache, version, _request(**changed))


def test_a_reloaded_version_has_other_keys():
    cache = ResponseCache(1 << 20)
    assert _key(cache, _version(), _request()) != _key(cache, _version(), _request())


def test_inputs_larger_than_the_cache_have_no_key():
    assert _key(ResponseCache(16), _version(), _request()) is None


def test_keys_are_equal_only_for_equal_bytes():
    assert K(b"abc" * 1000) == K(b"abc" * 1000)
    assert hash(K(b"abc" * 1000)) == hash(K(b"abc" * 1000))
    assert K(b"abc") != K(b"abd") and K(b"abc") != b"abc"
    big = bytes(range(256)) * 1024  # hashed with the GIL released
    assert K(big) == K(bytes(big)) and K(big) != K(big[:-1] + b"\x00")


# -- the table -------------------------------------------------------------------------------

def test_lookup_returns_a_read_only_copy_of_what_was_stored():
    cache, version = ResponseCache(1 << 20), _version()
    outputs = _outputs(0.5)
    assert cache.insert(version, K(b"k"), outputs)
    outputs[0].data[...] = 9.0  # the response's own array (a pool view, say) is reused
    stored = cache.lookup(K(b"k"))
    assert stored[0].data.tolist() == [[0.5] * 4]
    with pytest.raises(ValueError):
        stored[0].data[0, 0] = 1.0


def test_least_recently_used_entries_are_evicted_first_and_bytes_stay_bounded():
    entry = ENTRY_OVERHEAD_BYTES + 1 + 160 + 64 * 4
    cache, version = ResponseCache(3 * entry), _version()
    for key in (b"a", b"b", b"c"):
        assert cache.insert(version, K(key), _outputs(size=64))
    assert cache.lookup(K(b"a")) is not None  # b is now the least recently used
    assert cache.insert(version, K(b"d"), _outputs(size=64))
    assert [k for k in (b"a", b"b", b"c", b"d") if cache.lookup(K(k)) is not None] == \
        [b"a", b"c", b"d"]
    assert cache.evictions == 1 and cache.bytes_used <= cache.capacity_bytes


def test_an_entry_larger_than_the_cache_is_not_stored_and_evicts_nothing():
    cache, version = ResponseCache(4096), _version()
    assert cache.insert(version, K(b"small"), _outputs())
    assert not cache.insert(version, K(b"big"), _outputs(size=4096))
    assert cache.lookup(K(b"big")) is None and cache.lookup(K(b"small")) is not None


def test_a_version_that_is_not_ready_stores_nothing():
    cache, version = ResponseCache(1 << 20), _version()
    version.state = ss.MODEL_UNLOADING
    assert not cache.insert(version, K(b"k"), _outputs())
    assert cache.lookup(K(b"k")) is None and cache.bytes_used == 0


def test_drop_removes_only_that_versions_entries_and_frees_their_bytes():
    cache, old, new = ResponseCache(1 << 20), _version(), _version()
    cache.insert(old, K(b"old1"), _outputs())
    cache.insert(old, K(b"old2"), _outputs())
    cache.insert(new, K(b"new1"), _outputs())
    kept = cache.bytes_used // 3
    assert cache.drop(old.generation) == 2
    assert cache.lookup(K(b"old1")) is None and cache.lookup(K(b"old2")) is None
    assert cache.lookup(K(b"new1")) is not None
    assert len(cache) == 1 and cache.bytes_used == kept


def test_a_cache_needs_a_positive_size():
    with pytest.raises(ValueError):
        ResponseCache(0)
