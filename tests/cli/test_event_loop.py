"""Which event loop a server runs on: uvloop by default (``--event-loop auto``, uvloop being
one of pyserver's dependencies), asyncio's own when asked for, and asyncio's own under
``auto`` when HTTPS is on (HTTP TLS upgrades connections with loop.start_tls, which uvloop
gets wrong after a failed handshake). The server's start-up line names the loop."""

from __future__ import annotations

import re

import pytest

from conftest import ServerProcess
from pyserver.cli import build_parser, event_loop_for


def _loop_in_log(server: ServerProcess) -> str:
    found = re.search(r"; event loop (\w+)", server.log_text())
    assert found, server.log_text()
    return found.group(1)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    return tmp_path_factory.mktemp("empty_store")


@pytest.mark.parametrize("flags,expected", [([], "uvloop"), (["--event-loop=asyncio"], "asyncio"),
                                            (["--event-loop=uvloop"], "uvloop")])
def test_the_server_runs_on_the_loop_chosen(empty_store, tmp_path, flags, expected):
    server = ServerProcess(empty_store, *flags, workdir=tmp_path)
    try:
        assert _loop_in_log(server) == expected
    finally:
        assert server.stop() == 0, server.log_text()


def test_auto_is_left_to_find_uvloop_without_https():
    assert event_loop_for(build_parser().parse_args(["--model-store=/s"])) == "auto"


def test_auto_is_asyncio_with_https():
    args = build_parser().parse_args(["--model-store=/s", "--tls-cert=c.pem", "--tls-key=k.pem"])
    assert event_loop_for(args) == "asyncio"


def test_an_explicit_choice_is_kept_with_https():
    args = build_parser().parse_args(["--model-store=/s", "--tls-cert=c.pem", "--tls-key=k.pem",
                                      "--event-loop=uvloop"])
    assert event_loop_for(args) == "uvloop"
