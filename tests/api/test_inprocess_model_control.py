"""pyserver.Server in explicit model control mode: only what start-up names
is loaded; load and unload change that while the server runs."""

from __future__ import annotations

import numpy as np
import pytest

from pyserver import Server, ServerError
from pyserver.errors import Code
from pyserver.examples import onnx_models as m
from pyserver.examples.store import config, tensor, write_model

pytestmark = pytest.mark.timeout(120)

X = np.ones((1, 16), np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("inprocess-explicit")
    for name, value in (("plus_one", 1.0), ("plus_two", 2.0)):
        write_model(root, name, config(name, 4, [tensor("INPUT0", "FP32", [16])],
                                       [tensor("OUTPUT0", "FP32", [16])]),
                    {1: m.add_constant(value)})
    with Server(root, model_control_mode="explicit", load_models=["plus_one"]) as s:
        yield s


def test_only_the_start_up_models_are_loaded(server):
    loaded = {e.name: e.state for e in server.index()}
    assert loaded == {"plus_one": "READY", "plus_two": None}
    assert server.infer("plus_one", {"INPUT0": X}).as_numpy("OUTPUT0")[0, 0] == 2.0


def test_load_makes_a_model_serve_and_unload_stops_it(server):
    with pytest.raises(ServerError) as err:
        server.infer("plus_two", {"INPUT0": X})
    assert err.value.code == Code.NOT_FOUND
    server.load("plus_two")
    assert server.infer("plus_two", {"INPUT0": X}).as_numpy("OUTPUT0")[0, 0] == 3.0
    server.unload("plus_two")
    assert not server.model_ready("plus_two")
    with pytest.raises(ServerError):
        server.infer("plus_two", {"INPUT0": X})


def test_loading_a_model_not_in_the_store_fails_with_its_name(server):
    with pytest.raises(ServerError) as err:
        server.load("absent")
    assert "absent" in err.value.message
