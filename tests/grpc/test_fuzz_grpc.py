"""Generated malformed v1 and v2 gRPC messages (pyserver_perf.fuzz:
structured edits such as huge dims and batch sizes, byte-level mutations of
valid messages, random bytes), a bounded number per family. ``python -m
pyserver_perf.fuzz --cases 20000`` runs many more.

Transport: every call ends before its deadline and a good request is served
after each family. Translation: no UNKNOWN / INTERNAL (or v1 status
INTERNAL / UNKNOWN) for a client's mistake and no Python internals in a
status (v1's documented UNKNOWN for an unknown Health mode excepted)."""

from __future__ import annotations

import asyncio
import os

import pytest

from conftest import ServerProcess
from pyserver_perf import fuzz

CASES_PER_FAMILY = int(os.environ.get("PYSERVER_FUZZ_GRPC_CASES_PER_FAMILY", "100"))
SEED = int(os.environ.get("PYSERVER_FUZZ_SEED", "15"))


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, *fuzz.FUZZ_SERVER_FLAGS,
                        workdir=tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def report(server) -> fuzz.Report:
    return asyncio.run(fuzz.fuzz_grpc(server.grpc_target, list(fuzz.GRPC_FAMILIES),
                                      CASES_PER_FAMILY, SEED))


def _listing(findings: list[fuzz.Finding]) -> str:
    return f"{len(findings)} findings:\n" + "\n".join(f.describe() for f in findings[:20])


@pytest.mark.parametrize("family", fuzz.GRPC_FAMILIES)
def test_fuzzed_messages_are_answered_in_time_and_the_server_keeps_serving(
        server, report, family):
    assert report.cases[family] == CASES_PER_FAMILY
    found = report.by_family(family, fuzz.TRANSPORT)
    assert not found, _listing(found)
    assert server.proc.poll() is None


@pytest.mark.parametrize("family", fuzz.GRPC_FAMILIES)
def test_fuzzed_client_mistakes_get_no_unknown_and_no_internals(report, family):
    found = report.by_family(family, fuzz.TRANSLATION)
    assert not found, _listing(found)
