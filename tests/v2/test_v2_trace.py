"""Triton's trace extension: ``GET``/``POST /v2[/models/<m>]/trace/setting`` and gRPC
``TraceSetting`` through the real tritonclient (2.51.0), and the trace files the sampled
requests end up in (Triton's layout: one JSON array, two objects per trace).

One server per module over the example store; each test puts the settings back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import HOST, ServerProcess, http_request

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

DEFAULTS = {"trace_file": "", "trace_level": ["OFF"], "trace_rate": "1000",
            "trace_count": "-1", "log_frequency": "0", "trace_mode": "triton"}
STAMPS = ["REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_END", "REQUEST_END"]


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(f"{HOST}:{server.port}")
    yield c
    c.close()


@pytest.fixture
def restored(client):
    yield client
    client.update_trace_settings(settings={k: v for k, v in DEFAULTS.items()
                                           if k != "trace_mode"})
    client.update_trace_settings("simple", settings={k: None for k in DEFAULTS
                                                     if k != "trace_mode"})


def _infer(client, request_id: str = "") -> None:
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        i = httpclient.InferInput(name, [1, 16], "FP32")
        i.set_data_from_numpy(a)
        inputs.append(i)
    client.infer("simple", inputs, request_id=request_id)


def _traces(path: Path, timeout: float = 5.0) -> list[dict]:
    """The traces of a trace file, once it is there and whole."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _trace_every(client, trace_file: Path, rate: str, **more: str) -> None:
    """Global settings: TIMESTAMPS of one request in ``rate`` into ``trace_file``."""
    client.update_trace_settings(settings={"trace_file": str(trace_file),
                                           "trace_level": ["TIMESTAMPS"], "trace_rate": rate,
                                           **more})


def _check_trace(head: dict, stamps: dict, request_id: str = "") -> None:
    assert head["model_name"] == "simple" and head["model_version"] == 1
    assert head["request_id"] == request_id and stamps["id"] == head["id"]
    names = [s["name"] for s in stamps["timestamps"]]
    assert names == STAMPS
    ns = [s["ns"] for s in stamps["timestamps"]]
    assert ns == sorted(ns) and ns[0] > 0


def test_the_defaults_are_triton_s(client):
    assert client.get_trace_settings() == DEFAULTS
    assert client.get_trace_settings("simple") == DEFAULTS


def test_trace_is_listed_among_the_extensions(client):
    assert "trace" in client.get_server_metadata()["extensions"]


def test_sampled_requests_are_written_every_log_frequency_traces(restored, tmp_path):
    trace_file = tmp_path / "trace.json"
    answer = restored.update_trace_settings(settings={
        "trace_file": str(trace_file), "trace_level": ["TIMESTAMPS"], "trace_rate": "1",
        "log_frequency": "2"})
    assert answer["trace_level"] == ["TIMESTAMPS"] and answer["log_frequency"] == "2"
    _infer(restored, "t-1")
    _infer(restored, "t-2")
    traces = _traces(Path(f"{trace_file}.0"))
    assert len(traces) == 4
    _check_trace(traces[0], traces[1], "t-1")
    _check_trace(traces[2], traces[3], "t-2")


def test_the_rate_samples_one_request_in_n(restored, tmp_path):
    trace_file = tmp_path / "trace.json"
    _trace_every(restored, trace_file, "3", log_frequency="2")
    for i in range(6):
        _infer(restored, f"r-{i}")
    traces = _traces(Path(f"{trace_file}.0"))
    assert [t["request_id"] for t in traces[::2]] == ["r-0", "r-3"]


def test_the_count_stops_sampling_and_writes_what_it_took(restored, tmp_path):
    trace_file = tmp_path / "trace.json"
    _trace_every(restored, trace_file, "1", trace_count="2")
    for i in range(4):
        _infer(restored, f"c-{i}")
    traces = _traces(Path(f"{trace_file}.0"))
    assert [t["request_id"] for t in traces[::2]] == ["c-0", "c-1"]
    assert restored.get_trace_settings()["trace_count"] == "0"


def test_a_model_s_own_settings_override_and_null_drops_them(restored):
    own = restored.update_trace_settings("simple", settings={"trace_rate": "5"})
    assert own["trace_rate"] == "5" and own["trace_level"] == ["OFF"]
    assert restored.get_trace_settings()["trace_rate"] == "1000"
    restored.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]})
    # keys the model does not set follow the global settings
    assert restored.get_trace_settings("simple")["trace_level"] == ["TIMESTAMPS"]
    back = restored.update_trace_settings("simple", settings={"trace_rate": None})
    assert back["trace_rate"] == "1000"


@pytest.mark.parametrize("body,fragment", [
    (b'{"trace_level": ["TENSORS"]}', "TENSORS"),
    (b'{"trace_level": ["LOUD"]}', "LOUD"),
    (b'{"trace_level": "TIMESTAMPS", "trace_rate": "0"}', "trace_rate"),
    (b'{"trace_rate": "often"}', "trace_rate"),
    (b'{"trace_count": "-2"}', "trace_count"),
    (b'{"log_frequency": "-1"}', "log_frequency"),
    (b'{"trace_colour": "red"}', "trace_colour"),
    (b'[]', "JSON object"),
])
def test_a_bad_setting_is_400_and_changes_nothing(server, client, body, fragment):
    status, _, answer = http_request(server.port, "POST", "/v2/trace/setting", {}, body)
    assert status == 400
    assert fragment in json.loads(answer)["error"]
    assert client.get_trace_settings() == DEFAULTS


def test_an_unknown_model_is_404(server):
    status, _, answer = http_request(server.port, "GET", "/v2/models/nosuch/trace/setting")
    assert status == 404 and "nosuch" in json.loads(answer)["error"]


def test_other_methods_are_405(server):
    status, _, _ = http_request(server.port, "PUT", "/v2/trace/setting", {}, b"{}")
    assert status == 405


def test_tritonclient_http_reports_the_error(client):
    with pytest.raises(InferenceServerException) as err:
        client.update_trace_settings(settings={"trace_rate": "0"})
    assert err.value.status() == "400"


def test_traces_not_yet_written_go_to_the_trace_file_at_shutdown(example_store, tmp_path):
    trace_file = tmp_path / "at-exit.json"
    srv = ServerProcess(example_store, workdir=tmp_path)
    try:
        c = httpclient.InferenceServerClient(f"{HOST}:{srv.port}")
        _trace_every(c, trace_file, "1")
        for i in range(3):
            _infer(c, f"x-{i}")
        c.close()
        assert not trace_file.exists()  # log_frequency 0: at shutdown
    finally:
        assert srv.stop() == 0, srv.log_text()
    traces = _traces(trace_file, timeout=0)
    assert [t["request_id"] for t in traces[::2]] == ["x-0", "x-1", "x-2"]


GRPC_CHECK = """
import json, sys
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
c = grpcclient.InferenceServerClient(sys.argv[1])
out = {"before": c.get_trace_settings(as_json=True)["settings"],
       "model": c.update_trace_settings("simple", {"trace_rate": "7"}, as_json=True)["settings"],
       "global": c.get_trace_settings(as_json=True)["settings"],
       "cleared": c.update_trace_settings("simple", {"trace_rate": None},
                                          as_json=True)["settings"]}
try:
    c.update_trace_settings(settings={"trace_level": ["TENSORS"]})
    out["refused"] = None
except InferenceServerException as exc:
    out["refused"] = [str(exc.status()), exc.message()]
print(json.dumps(out))
"""


def test_grpc_trace_setting(server):
    done = subprocess.run([sys.executable, "-c", GRPC_CHECK, server.grpc_target],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"]["trace_level"] == {"value": ["OFF"]}
    assert out["before"]["trace_rate"] == {"value": ["1000"]}
    assert out["model"]["trace_rate"] == {"value": ["7"]}
    assert out["global"]["trace_rate"] == {"value": ["1000"]}
    assert out["cleared"]["trace_rate"] == {"value": ["1000"]}
    status, message = out["refused"]
    assert "INVALID_ARGUMENT" in status and "TENSORS" in message


def test_the_flags_set_the_global_settings_at_start_up(example_store, tmp_path):
    trace_file = tmp_path / "flags.json"
    srv = ServerProcess(example_store, f"--trace-file={trace_file}", "--trace-level=TIMESTAMPS",
                        "--trace-rate=1", "--trace-log-frequency=1", workdir=tmp_path)
    try:
        c = httpclient.InferenceServerClient(f"{HOST}:{srv.port}")
        assert c.get_trace_settings() == dict(
            DEFAULTS, trace_file=str(trace_file), trace_level=["TIMESTAMPS"], trace_rate="1",
            log_frequency="1")
        _infer(c, "f-1")
        c.close()
        traces = _traces(Path(f"{trace_file}.0"))
        assert traces[0]["request_id"] == "f-1"
    finally:
        assert srv.stop() == 0, srv.log_text()


def test_a_bad_trace_flag_stops_the_start(example_store, tmp_path):
    srv = ServerProcess(example_store, "--trace-rate=0", workdir=tmp_path, wait=False)
    assert srv.wait() == 1
    assert "trace_rate" in srv.log_text()
