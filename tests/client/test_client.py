"""pyserver.client against a real server process: every call over HTTP and
gRPC, blocking and asyncio, results checked against numpy."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import HOST, free_port
from pyserver.client import InferenceServerClient, InferenceServerException
from pyserver.client import aio
from pyserver.examples.onnx_models import classifier_reference
from pyserver.examples.store import LABELS
from pyserver.protos import request_status_pb2

pytestmark = pytest.mark.timeout(120)
Code = request_status_pb2.RequestStatusCode
RNG = np.random.default_rng(5)


def _url(server, protocol: str) -> str:
    return f"{HOST}:{server.port}" if protocol == "http" else server.grpc_target


@pytest.fixture(scope="module", params=["http", "grpc"])
def protocol(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def client(server, protocol):
    with InferenceServerClient(_url(server, protocol), protocol, timeout=20) as c:
        yield c


def _ab(batch: int, dtype=np.float32):
    return (RNG.standard_normal((batch, 16)).astype(dtype),
            RNG.standard_normal((batch, 16)).astype(dtype))


def test_health(client):
    assert client.is_live() is True
    assert client.is_ready() is True


def test_status_all_and_one(client):
    status = client.get_status()
    assert {"simple", "classifier", "versioned", "image_classifier"} <= set(status.model_status)
    one = client.get_status("simple")
    assert list(one.model_status) == ["simple"]
    config = one.model_status["simple"].config
    assert config.max_batch_size == 8 and [i.name for i in config.input] == ["INPUT0", "INPUT1"]
    assert 1 in one.model_status["simple"].version_status


def test_status_unknown_model(client):
    with pytest.raises(InferenceServerException) as info:
        client.get_status("no_such_model")
    assert info.value.code == Code.INVALID_ARG and info.value.code_name == "INVALID_ARG"
    assert "no_such_model" in info.value.message


@pytest.mark.parametrize("batch", [1, 3])
def test_infer_raw_dict_and_list(client, batch):
    a, b = _ab(batch)
    result = client.infer("simple", {"INPUT0": a, "INPUT1": b})
    np.testing.assert_allclose(result.raw["OUTPUT0"], a + b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)
    assert result.batch_size == batch and result.model_name == "simple"
    listed = client.infer("simple", [("INPUT0", a), ("INPUT1", b)], ["OUTPUT1"], batch_size=batch)
    assert list(listed.raw) == ["OUTPUT1"]
    np.testing.assert_allclose(listed.raw["OUTPUT1"], a - b, rtol=1e-6)


def test_infer_int32_and_nobatch(client):
    a = RNG.integers(-100, 100, (2, 16)).astype(np.int32)
    b = RNG.integers(-100, 100, (2, 16)).astype(np.int32)
    result = client.infer("simple_int32", {"INPUT0": a, "INPUT1": b})
    assert result.raw["OUTPUT0"].dtype == np.int32
    np.testing.assert_array_equal(result.raw["OUTPUT0"], a + b)
    nobatch = client.infer("simple_nobatch", {"INPUT0": a[0].astype(np.float32),
                                              "INPUT1": b[0].astype(np.float32)})
    assert nobatch.raw["OUTPUT0"].shape == (16,)
    np.testing.assert_allclose(nobatch.raw["OUTPUT0"], (a[0] + b[0]).astype(np.float32))


def test_infer_classes_with_labels(client):
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    result = client.infer("classifier", {"INPUT": x}, {"OUTPUT": 3})
    expected = classifier_reference(x)
    assert len(result.classes["OUTPUT"]) == 2
    for row, classes in zip(expected, result.classes["OUTPUT"]):
        top = np.argsort(-row)[:3]
        assert [c.idx for c in classes] == list(top)
        assert [c.label for c in classes] == [LABELS[i] for i in top]
        np.testing.assert_allclose([c.value for c in classes], row[top], rtol=1e-5)


def test_version_and_request_id(client):
    x = np.zeros((1, 16), np.float32)
    for version in (1, 2, 3):
        result = client.infer("versioned", {"INPUT0": x}, version=version, request_id=100 + version)
        assert result.model_version == version and result.request_id == 100 + version
        np.testing.assert_allclose(result.raw["OUTPUT0"], x + version)
    assert client.infer("versioned", {"INPUT0": x}).model_version == 3
    with pytest.raises(InferenceServerException) as info:
        client.infer("versioned", {"INPUT0": x}, version=9)
    assert info.value.code == Code.NOT_FOUND


def test_infer_errors(client):
    a, b = _ab(2)
    with pytest.raises(InferenceServerException) as info:
        client.infer("simple", {"INPUT0": a[:, :4], "INPUT1": b})
    assert info.value.code == Code.INVALID_ARG and "INPUT0" in info.value.message
    with pytest.raises(InferenceServerException) as info:
        client.infer("simple", {"INPUT0": a.astype(np.float64), "INPUT1": b})
    assert info.value.code == Code.INVALID_ARG
    with pytest.raises(InferenceServerException) as info:
        client.infer("simple", {"INPUT0": a, "INPUT1": b}, batch_size=5)
    assert info.value.code == Code.INVALID_ARG
    with pytest.raises(InferenceServerException):
        client.infer("no_such_model", {"INPUT0": a})
    with pytest.raises(InferenceServerException) as info:
        client.infer("simple", {"INPUT0": a, "INPUT1": b}, ["NOPE"])
    assert info.value.code == Code.INVALID_ARG


def test_connection_reused(server):
    with InferenceServerClient(f"{HOST}:{server.port}", "http") as c:
        c.is_live()
        conn = c._transport._conn
        for _ in range(5):
            c.infer("simple", dict(zip(("INPUT0", "INPUT1"), _ab(1))))
        assert c._transport._conn is conn


def test_stream_in_order(server):
    with InferenceServerClient(server.grpc_target, "grpc") as c:
        inputs = [dict(zip(("INPUT0", "INPUT1"), _ab(1))) for _ in range(8)]
        results = list(c.stream_infer("simple", inputs))
        assert len(results) == 8
        for given, result in zip(inputs, results):
            np.testing.assert_allclose(result.raw["OUTPUT0"], given["INPUT0"] + given["INPUT1"],
                                       rtol=1e-6)
        assert [r.request_id for r in results] == sorted(r.request_id for r in results)
    with InferenceServerClient(f"{HOST}:{server.port}", "http") as c:
        with pytest.raises(InferenceServerException) as info:
            list(c.stream_infer("simple", inputs))
        assert info.value.code == Code.UNSUPPORTED


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_unreachable_and_bad_url(proto):
    port = free_port()
    with pytest.raises(InferenceServerException) as info:
        InferenceServerClient(f"{HOST}:{port}", proto, timeout=5).is_live()
    assert info.value.code == Code.UNAVAILABLE and str(port) in info.value.message
    with pytest.raises(InferenceServerException) as info:
        InferenceServerClient("http://host/path", proto)
    assert info.value.code == Code.INVALID_ARG


def test_unknown_protocol():
    with pytest.raises(InferenceServerException):
        InferenceServerClient("localhost:8000", "udp")


# -- asyncio --------------------------------------------------------------------

def test_aio_all_calls(server, protocol):
    async def run():
        async with aio.InferenceServerClient(_url(server, protocol), protocol, timeout=20) as c:
            assert await c.is_live() and await c.is_ready()
            status = await c.get_status("classifier")
            assert list(status.model_status) == ["classifier"]
            pairs = [_ab(2) for _ in range(6)]
            first_connection = getattr(c._transport, "_streams", None)
            results = await asyncio.gather(*[
                c.infer("simple", {"INPUT0": a, "INPUT1": b}, request_id=i + 1)
                for i, (a, b) in enumerate(pairs)])
            for i, ((a, b), result) in enumerate(zip(pairs, results)):
                assert result.request_id == i + 1
                np.testing.assert_allclose(result.raw["OUTPUT0"], a + b, rtol=1e-6)
            x = RNG.standard_normal((1, 8)).astype(np.float32)
            cls = (await c.infer("classifier", {"INPUT": x}, {"OUTPUT": 1})).classes["OUTPUT"]
            assert cls[0][0].idx == int(np.argmax(classifier_reference(x)[0]))
            assert (await c.infer("versioned", {"INPUT0": np.zeros((1, 16), np.float32)},
                                  version=2)).model_version == 2
            if protocol == "http":  # one keep-alive connection for every call
                assert c._transport._streams is first_connection is not None
            with pytest.raises(InferenceServerException) as info:
                await c.infer("simple", {"INPUT0": pairs[0][0][:, :3], "INPUT1": pairs[0][1]})
            assert info.value.code == Code.INVALID_ARG
            if protocol == "grpc":
                streamed = [r async for r in c.stream_infer(
                    "simple", [{"INPUT0": a, "INPUT1": b} for a, b in pairs])]
                for (a, b), result in zip(pairs, streamed):
                    np.testing.assert_allclose(result.raw["OUTPUT1"], a - b, rtol=1e-6)
        port = free_port()
        with pytest.raises(InferenceServerException) as info:
            await aio.InferenceServerClient(f"{HOST}:{port}", protocol, timeout=5).is_live()
        assert info.value.code == Code.UNAVAILABLE

    asyncio.run(run())


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_timeout_on_a_silent_server(proto):
    """A server that accepts the connection but never answers: the call
    ends after the timeout with UNAVAILABLE "timed out", blocking and async."""
    import socket
    import time

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind((HOST, 0))
        silent.listen(8)
        url = f"{HOST}:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(InferenceServerException) as info:
            InferenceServerClient(url, proto, timeout=0.5).is_live()
        assert info.value.code == Code.UNAVAILABLE and "timed out" in info.value.message
        assert time.monotonic() - start < 5

        async def run():
            client = aio.InferenceServerClient(url, proto, timeout=0.5)
            try:
                await client.is_live()
            finally:
                await client.close()

        with pytest.raises(InferenceServerException) as info:
            asyncio.run(run())
        assert info.value.code == Code.UNAVAILABLE and "timed out" in info.value.message
