"""An ONNX Runtime library that cannot be loaded: the ONNX models' versions are
UNAVAILABLE with a reason naming the library, and the server keeps running
(``--exit-on-error=false``)."""

from __future__ import annotations

import pytest

from conftest import Code, ServerProcess, get_status, infer, nv_status, request_header, write_identity
from pyserver.backends.onnxruntime_onnx import LIBRARY_ENV
from pyserver.protos import server_status_pb2 as ss

MISSING = "/nonexistent/libonnxruntime.so.1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("ort_missing_store")
    write_identity(store, "identity")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LIBRARY_ENV, MISSING)
        srv = ServerProcess(store, "--exit-on-error=false",
                            workdir=tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def test_the_model_is_unavailable_with_the_library_in_its_reason(server):
    version = get_status(server.port, "identity").model_status["identity"].version_status[1]
    assert version.ready_state == ss.MODEL_UNAVAILABLE
    assert MISSING in version.ready_state_reason.message


def test_infer_on_it_is_refused_and_the_server_keeps_serving(server):
    status, headers, _ = infer(server.port, "identity", request_header(1, ["INPUT0"]),
                               b"\x00" * 16)
    assert status == 400
    assert nv_status(headers).code == Code.UNAVAILABLE
    assert get_status(server.port).model_status["identity"]
