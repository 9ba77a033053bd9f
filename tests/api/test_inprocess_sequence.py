"""Sequence (stateful) models through the in-process API: sequence_id,
sequence_start and sequence_end as infer options, the server keeping the
ONNX accumulator's state, and a refused request raising ServerError."""

from __future__ import annotations

import numpy as np
import pytest

from pyserver import Server, ServerError
from pyserver.errors import Code
from pyserver.examples import onnx_models
from pyserver.examples.store import config, tensor, write_model

pytestmark = pytest.mark.timeout(120)

SEQUENCE = ('sequence_batching { oldest { max_candidate_sequences: 4 } control_input [ '
            '{ name: "START" control [ { kind: CONTROL_SEQUENCE_START '
            'int32_false_true: [ 0, 1 ] } ] } ] state [ { input_name: "STATE_IN" '
            'output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 1 ] } ] }')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("inprocess-sequence")
    write_model(root, "acc", config("acc", 4, [tensor("INPUT", "INT32", [1])],
                                    [tensor("OUTPUT", "INT32", [1])], SEQUENCE),
                {1: onnx_models.accumulator()})
    with Server(root) as s:
        yield s


def _step(server, sequence_id, value, **flags) -> int:
    response = server.infer("acc", {"INPUT": np.array([[value]], np.int32)},
                            sequence_id=sequence_id, **flags)
    return int(response.as_numpy("OUTPUT")[0, 0])


def test_two_sequences_interleave(server):
    assert _step(server, 1, 10, sequence_start=True) == 10
    assert _step(server, "two", 1, sequence_start=True) == 1
    assert _step(server, 1, 5) == 15
    assert _step(server, "two", 2, sequence_end=True) == 3
    assert _step(server, 1, 1, sequence_end=True) == 16


def test_request_without_start_raises(server):
    with pytest.raises(ServerError) as info:
        _step(server, 77, 1)
    assert info.value.code == Code.INVALID_ARG
    assert "must specify the START flag" in info.value.message


def test_out_of_range_sequence_id_raises(server):
    with pytest.raises(ServerError) as info:
        _step(server, 2**64, 1, sequence_start=True)
    assert info.value.code == Code.INVALID_ARG
    assert "unsigned 64-bit integer or a string" in info.value.message


def test_numpy_integer_sequence_id_is_taken(server):
    assert _step(server, np.uint64(2**63 + 5), 4, sequence_start=True) == 4
    assert _step(server, 2**63 + 5, 3, sequence_end=True) == 7
