"""The response cache through the in-process API (pyserver.Server) over a
real ONNX model whose config enables it: with a cache size the second
identical request is answered without executing; without one nothing is
cached."""

from __future__ import annotations

import numpy as np
import pytest

from pyserver import Server
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("inprocess_cache_store")
    write_model(root, "adder", config("adder", 8, [tensor("INPUT0", "FP32", [16])],
                                      [tensor("OUTPUT0", "FP32", [16])],
                                      "response_cache { enable: true }"),
                {1: onnx_models.add_constant(3.0)})
    return root


@pytest.fixture(scope="module")
def caching(store):
    with Server(store, response_cache_byte_size=1 << 20) as server:
        yield server


@pytest.fixture(scope="module")
def not_caching(store):
    with Server(store) as server:
        yield server


def _counts(server: Server) -> tuple[int, int, int]:
    stats = server.statistics("adder")[0]
    return stats.execution_count, stats.cache_hit_count, stats.cache_miss_count


def test_identical_request_is_answered_from_the_cache(caching):
    x = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 16)
    before = _counts(caching)
    first = caching.infer("adder", {"INPUT0": x}, id="one")
    second = caching.infer("adder", {"INPUT0": x}, id="two")
    assert (first.id, second.id) == ("one", "two")
    np.testing.assert_array_equal(first.as_numpy("OUTPUT0"), x + 3)
    np.testing.assert_array_equal(second.as_numpy("OUTPUT0"), x + 3)
    after = _counts(caching)
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (1, 1, 1)


def test_outputs_served_from_the_cache_are_read_only(caching):
    x = np.full((1, 16), 7, np.float32)
    caching.infer("adder", {"INPUT0": x})
    hit = caching.infer("adder", {"INPUT0": x}).as_numpy("OUTPUT0")
    with pytest.raises(ValueError):
        hit[0, 0] = 0.0
    np.testing.assert_array_equal(caching.infer("adder", {"INPUT0": x}).as_numpy("OUTPUT0"),
                                  x + 3)


def test_without_a_cache_size_nothing_is_cached(not_caching):
    x = np.full((1, 16), 2, np.float32)
    before = _counts(not_caching)
    for _ in range(3):
        np.testing.assert_array_equal(not_caching.infer("adder", {"INPUT0": x})
                                      .as_numpy("OUTPUT0"), x + 3)
    after = _counts(not_caching)
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (3, 0, 0)
