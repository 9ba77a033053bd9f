"""Generated malformed HTTP requests (pyserver_perf.fuzz: request lines,
headers, chunked framing, declared sizes, NV-InferRequest text, v2 JSON and
binary headers), a bounded number per family, against one server (run once
per parser by tests/run.py). ``python -m pyserver_perf.fuzz --cases 20000``
runs many more.

Transport: every case ends with well-formed answers and a close (or a clean
close) within the deadline, and a good request is served after each family.
Translation: no 5xx for a client's mistake and no Python internals in an
answer."""

from __future__ import annotations

import asyncio
import os

import pytest

from conftest import HOST, ServerProcess, http_request
from pyserver_perf import fuzz

CASES_PER_FAMILY = int(os.environ.get("PYSERVER_FUZZ_CASES_PER_FAMILY", "60"))
SEED = int(os.environ.get("PYSERVER_FUZZ_SEED", "15"))


@pytest.fixture(scope="module")
def server(example_store, tmp_path_factory):
    srv = ServerProcess(example_store, *fuzz.FUZZ_SERVER_FLAGS,
                        workdir=tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def report(server) -> fuzz.Report:
    return asyncio.run(fuzz.fuzz_http(HOST, server.port, list(fuzz.HTTP_FAMILIES),
                                      CASES_PER_FAMILY, SEED))


def _listing(findings: list[fuzz.Finding]) -> str:
    return f"{len(findings)} findings:\n" + "\n".join(f.describe() for f in findings[:20])


@pytest.mark.parametrize("family", fuzz.HTTP_FAMILIES)
def test_fuzzed_requests_end_in_well_formed_answers_and_the_server_keeps_serving(
        server, report, family):
    assert report.cases[family] == CASES_PER_FAMILY
    found = report.by_family(family, fuzz.TRANSPORT)
    assert not found, _listing(found)
    assert server.proc.poll() is None
    assert http_request(server.port, "GET", "/api/health/ready")[0] == 200


@pytest.mark.parametrize("family", fuzz.HTTP_FAMILIES)
def test_fuzzed_client_mistakes_get_4xx_without_internals(report, family):
    found = report.by_family(family, fuzz.TRANSLATION)
    assert not found, _listing(found)
