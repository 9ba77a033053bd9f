"""Triton's logging extension: ``GET``/``POST /v2/logging`` and gRPC ``LogSettings``,
through the real tritonclient (2.51.0) and raw HTTP for the errors, and the ``--log-*``
flags that set the settings at start-up. A change shows in what the server writes next.

One server per module (explicit model control on the example store: loading a model is
how a test makes the server log something of each level it needs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from conftest import HOST, ServerProcess, http_request

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

DEFAULTS = {"log_file": "", "log_info": True, "log_warning": True, "log_error": True,
            "log_verbose_level": 0, "log_format": "default"}
ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ I ", re.MULTILINE)


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, "--model-control-mode=explicit",
                        workdir=tmp_path_factory.mktemp("v2-logging"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(f"{HOST}:{server.port}")
    yield c
    c.close()


@pytest.fixture
def restored(client):
    """Puts the settings back as they were after the test."""
    yield client
    client.update_log_settings({k: v for k, v in DEFAULTS.items() if k != "log_file"})


def _post(server, body: bytes):
    return http_request(server.port, "POST", "/v2/logging", {}, body)


def _loaded_and_logged(server, client, model: str, fragment: str) -> bool:
    """Loads ``model``, unloads it, and says whether ``fragment`` showed in the server's
    log by then (lines are written as they are logged; a second more for a slow machine)."""
    client.load_model(model)
    client.unload_model(model)
    deadline = time.monotonic() + 1.0
    while fragment not in server.log_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_settings_are_triton_s_six(client):
    assert client.get_log_settings() == DEFAULTS


def test_logging_is_listed_among_the_extensions(client):
    assert "logging" in client.get_server_metadata()["extensions"]


def test_an_update_answers_with_every_setting(restored):
    answer = restored.update_log_settings({"log_verbose_level": 2})
    assert answer == dict(DEFAULTS, log_verbose_level=2)
    assert restored.get_log_settings()["log_verbose_level"] == 2


def test_verbose_level_turns_debug_records_on(server, restored):
    assert not _loaded_and_logged(server, restored, "simple_int32", "simple_int32 version 1: "
                                                                    "model file")
    restored.update_log_settings({"log_verbose_level": 1})
    assert _loaded_and_logged(server, restored, "simple_int32",
                              "simple_int32 version 1: model file")


def test_log_info_off_silences_info_records(server, restored):
    restored.update_log_settings({"log_info": False})
    assert not _loaded_and_logged(server, restored, "classifier", "classifier version 1 is ready")
    restored.update_log_settings({"log_info": True})
    assert _loaded_and_logged(server, restored, "classifier", "classifier version 1 is ready")


def test_iso8601_format_stamps_lines_in_utc(server, restored):
    restored.update_log_settings({"log_format": "ISO8601"})
    assert _loaded_and_logged(server, restored, "versioned", "versioned version 3 is ready")
    assert ISO_LINE.search(server.log_text())


# Each body but the last two also asks for a valid change (log_info off): a bad setting
# beside it must leave that undone too.
@pytest.mark.parametrize("body,fragment", [
    (b'{"log_info": false, "log_verbose_level": -1}', "log_verbose_level"),
    (b'{"log_info": false, "log_verbose_level": true}', "log_verbose_level"),
    (b'{"log_warning": "yes"}', "log_warning"),
    (b'{"log_info": false, "log_format": "xml"}', "log_format"),
    (b'{"log_info": false, "log_file": "/tmp/elsewhere.log"}', "log_file"),
    (b'{"log_info": false, "log_colour": true}', "log_colour"),
    (b'[1, 2]', "JSON object"),
    (b'{"log_info": ', "JSON"),
])
def test_a_bad_setting_is_400_and_changes_nothing(server, client, body, fragment):
    status, _, answer = _post(server, body)
    assert status == 400
    assert fragment in json.loads(answer)["error"]
    assert client.get_log_settings() == DEFAULTS


def test_the_same_log_file_may_be_sent_back(server, client):
    status, _, answer = _post(server, b'{"log_file": ""}')
    assert status == 200 and json.loads(answer) == DEFAULTS


def test_other_methods_are_405(server):
    status, _, _ = http_request(server.port, "PUT", "/v2/logging", {}, b"{}")
    assert status == 405


def test_tritonclient_http_reports_the_error(client):
    with pytest.raises(InferenceServerException) as err:
        client.update_log_settings({"log_verbose_level": -3})
    assert err.value.status() == "400"


# tritonclient.grpc cannot be imported beside pyserver's protos (grpc_v2_checks.py says
# why): the gRPC client runs in a child process and prints what it got.
GRPC_CHECK = """
import json, sys
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
c = grpcclient.InferenceServerClient(sys.argv[1])
out = {"before": c.get_log_settings(as_json=True)["settings"],
       "changed": c.update_log_settings({"log_verbose_level": 3, "log_format": "ISO8601"},
                                        as_json=True)["settings"]}
try:
    c.update_log_settings({"log_format": "xml"})
    out["refused"] = None
except InferenceServerException as exc:
    out["refused"] = [str(exc.status()), exc.message()]
print(json.dumps(out))
"""


def test_grpc_get_and_update(server, restored):
    done = subprocess.run([sys.executable, "-c", GRPC_CHECK, server.grpc_target],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"]["log_info"] == {"bool_param": True}
    assert out["before"]["log_file"] == {"string_param": ""}
    assert out["changed"]["log_verbose_level"] == {"uint32_param": 3}
    assert out["changed"]["log_format"] == {"string_param": "ISO8601"}
    assert restored.get_log_settings()["log_verbose_level"] == 3
    status, message = out["refused"]
    assert "INVALID_ARGUMENT" in status and "log_format" in message


def test_the_flags_set_the_settings_at_start_up(example_store, tmp_path):
    log_file = tmp_path / "server.log"
    srv = ServerProcess(example_store, "--log-format=ISO8601", "--log-info=false",
                        "--log-verbose=2", f"--log-file={log_file}", workdir=tmp_path)
    try:
        c = httpclient.InferenceServerClient(f"{HOST}:{srv.port}")
        assert c.get_log_settings() == dict(DEFAULTS, log_file=str(log_file), log_info=False,
                                            log_verbose_level=2, log_format="ISO8601")
        c.close()
    finally:
        assert srv.stop() == 0, srv.log_text()
    written = log_file.read_text()
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ D ", written, re.MULTILINE), written
    assert " I " not in written and "Starting server" not in written


def test_a_log_file_that_cannot_be_opened_stops_the_start(example_store, tmp_path):
    srv = ServerProcess(example_store, f"--log-file={tmp_path / 'missing' / 'x.log'}",
                        workdir=tmp_path, wait=False)
    assert srv.wait() == 2
    assert "--log-file" in srv.log_text()
