"""Identity models of every dtype ``onnx_models.identity`` supports, STRING
included (facts §2.4, §2.8): the bytes that go in come back out."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from conftest import (Code, ServerProcess, assert_error, infer, nv_infer_response, nv_status,
                      request_header, split_infer_body, text_form, write_identity)
from pyserver.examples.onnx_models import IDENTITY_DTYPES, V1_TO_NUMPY
from pyserver.protos import model_config_pb2 as mc

FIXED_DTYPES = [d for d in IDENTITY_DTYPES if d != "STRING"]
BATCH = 3
DIMS = (4,)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("identity_store")
    for dtype in IDENTITY_DTYPES:
        write_identity(store, f"identity_{dtype.lower()}", dtype, DIMS)
    write_identity(store, "identity_var", "FP32", (-1,))
    write_identity(store, "identity_string_nobatch", "STRING", (2, 2), max_batch_size=0)
    srv = ServerProcess(store, workdir=tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def _values(dtype: str, shape) -> np.ndarray:
    rng = np.random.default_rng(7)
    np_type = np.dtype(V1_TO_NUMPY[dtype])
    if np_type == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np_type.kind in "iu":
        info = np.iinfo(np_type)
        values = rng.integers(info.min, info.max, shape, dtype=np_type, endpoint=True)
        values.flat[0], values.flat[1] = info.min, info.max
        return values
    values = rng.standard_normal(shape).astype(np_type)
    special = [np.inf, -np.inf, np.nan, -0.0, np.finfo(np_type).tiny, np.finfo(np_type).max]
    values.flat[:len(special)] = special
    return values


def _serialize(items) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _deserialize(data: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        items.append(data[offset + 4:offset + 4 + length])
        offset += 4 + length
    return items


@pytest.mark.parametrize("dtype", FIXED_DTYPES)
def test_fixed_size_round_trip(server, dtype):
    x = _values(dtype, (BATCH, *DIMS))
    model = f"identity_{dtype.lower()}"
    header = request_header(BATCH, ["INPUT0"], ["OUTPUT0"], request_id=17)
    status, headers, body = infer(server.port, model, header, x.tobytes())
    assert status == 200, headers
    response = nv_infer_response(headers)
    (output,) = response.output
    assert list(output.raw.dims) == list(DIMS)
    assert output.raw.batch_byte_size == x.nbytes
    raw, trailer = split_infer_body(body, response)
    assert raw["OUTPUT0"] == x.tobytes()  # bit for bit, NaN and -0.0 included
    assert text_form(trailer) == response and trailer.id == 17
    assert trailer.output[0].data_type == getattr(mc, f"TYPE_{dtype}")


STRINGS = [b"", b"a", b"hello world", "gr\u00fc\u00dfe \u2603".encode(), b"nul\x00inside",
           b"x" * 1000, b"\t\r\n", b"last"] + [b"%d" % i for i in range(4)]


@pytest.mark.parametrize("batch_size", [1, BATCH])
def test_string_round_trip(server, batch_size):
    items = STRINGS[:batch_size * DIMS[0]]
    data = _serialize(items)
    header = request_header(batch_size, [{"name": "INPUT0", "batch_byte_size": len(data)}],
                            request_id=5)
    status, headers, body = infer(server.port, "identity_string", header, data)
    assert status == 200, headers
    response = nv_infer_response(headers)
    (output,) = response.output
    assert list(output.raw.dims) == list(DIMS)
    assert output.raw.batch_byte_size == len(data)
    raw, trailer = split_infer_body(body, response)
    assert trailer.output[0].data_type == mc.TYPE_STRING
    assert raw["OUTPUT0"] == data
    assert _deserialize(raw["OUTPUT0"]) == items
    assert trailer.id == 5


def test_string_nobatch_round_trip(server):
    items = [b"ab", b"", b"cde", "\u00e9".encode()]
    data = _serialize(items)
    header = request_header(1, [{"name": "INPUT0", "batch_byte_size": len(data)}])
    status, headers, body = infer(server.port, "identity_string_nobatch", header, data)
    assert status == 200, headers
    response = nv_infer_response(headers)
    assert list(response.output[0].raw.dims) == [2, 2]
    raw, _ = split_infer_body(body, response)
    assert raw["OUTPUT0"] == data


def test_string_without_batch_byte_size_is_invalid_arg(server):
    data = _serialize(STRINGS[:4])
    assert_error(infer(server.port, "identity_string", request_header(1, ["INPUT0"]), data),
                 Code.INVALID_ARG, "batch_byte_size")


@pytest.mark.parametrize("data", [
    struct.pack("<I", 100) + b"short",                       # element overruns the data
    _serialize([b"a", b"b", b"c"]),                          # too few elements
    _serialize([b"a", b"b", b"c", b"d", b"e"]),              # bytes after the last element
    b"\x01\x00",                                             # ends inside a length prefix
])
def test_malformed_string_data_is_invalid_arg(server, data):
    header = request_header(1, [{"name": "INPUT0", "batch_byte_size": len(data)}])
    assert_error(infer(server.port, "identity_string", header, data), Code.INVALID_ARG, "INPUT0")
    # still serves
    test_string_round_trip(server, 1)


def test_string_non_utf8_gets_a_definite_answer(server):
    """v1 strings are bytes; ONNX Runtime's Python API only takes UTF-8, so
    the answer may be an error, but it must be a complete answer."""
    items = [b"\xff\xfe", b"ok", b"\x80", b"z"]
    data = _serialize(items)
    header = request_header(1, [{"name": "INPUT0", "batch_byte_size": len(data)}])
    status, headers, body = infer(server.port, "identity_string", header, data)
    if status == 200:
        raw, _ = split_infer_body(body, nv_infer_response(headers))
        assert raw["OUTPUT0"] == data
    else:
        assert status == 400
        assert nv_status(headers).code != Code.SUCCESS
    test_string_round_trip(server, 1)


@pytest.mark.parametrize("length", [1, 5, 33])
def test_variable_dims(server, length):
    x = np.arange(BATCH * length, dtype=np.float32).reshape(BATCH, length)
    header = request_header(BATCH, [{"name": "INPUT0", "dims": [length]}])
    status, headers, body = infer(server.port, "identity_var", header, x.tobytes())
    assert status == 200, headers
    response = nv_infer_response(headers)
    assert list(response.output[0].raw.dims) == [length]
    raw, _ = split_infer_body(body, response)
    assert raw["OUTPUT0"] == x.tobytes()


def test_variable_dims_need_a_shape(server):
    assert_error(infer(server.port, "identity_var", request_header(1, ["INPUT0"]), b"\0" * 16),
                 Code.INVALID_ARG, "shape")


def test_wrong_request_dims_are_invalid_arg(server):
    header = request_header(1, [{"name": "INPUT0", "dims": [5]}])
    assert_error(infer(server.port, "identity_fp32", header, b"\0" * 20), Code.INVALID_ARG,
                 "shape")
