"""The benchmark harness, ``python -m perf``: every scenario listed with a one-line summary
and its options built, an unknown one refused, and the ``load`` scenario against a real
server over HTTP, gRPC Infer and StreamInfer (tiny durations: behaviour, not speed)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

from conftest import ServerProcess
from pyserver.examples.store import build_example_store

REPO = pathlib.Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (\d+) \| (\d+) \| \d+ \| \d+ \| \d+ \| (\d+) \| \d+% \|$", re.M)


def harness(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perf", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def scenario_names() -> list[str]:
    out = subprocess.run([sys.executable, "-c", "from perf.scenarios import SCENARIOS; "
                          "print(' '.join(SCENARIOS))"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.split()


def test_list_gives_every_scenario_a_one_line_summary():
    result = harness("list")
    assert result.returncode == 0, result.stderr
    listed = {}
    for line in result.stdout.splitlines()[2:]:
        name, _, summary = line.strip().partition(" ")
        listed[name] = summary.strip()
    assert set(listed) == set(scenario_names())
    assert all(len(summary) > 20 for summary in listed.values()), listed
    assert harness().stdout == result.stdout


def test_every_scenario_builds_its_options_and_parses_its_defaults():
    script = ("import argparse\nfrom perf.scenarios import SCENARIOS, load\n"
              "for name in SCENARIOS:\n"
              "    parser = argparse.ArgumentParser()\n"
              "    load(name).add_arguments(parser)\n"
              "    parser.parse_args([])\n"
              "    assert callable(load(name).run), name\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_an_unknown_scenario_is_refused_with_the_list():
    result = harness("no-such-scenario")
    assert result.returncode == 2
    assert "unknown scenario 'no-such-scenario'" in result.stderr and "v1-http" in result.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(build_example_store(tmp_path_factory.mktemp("harness_store")),
                        workdir=tmp_path_factory.mktemp("harness_server"))
    yield srv
    srv.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc", "grpc-stream"])
def test_load_measures_a_running_server(server, protocol):
    target = (["--port", str(server.port)] if protocol == "http" else
              ["-i", "grpc", "--port", str(server.grpc_port)]
              + (["--streaming"] if protocol == "grpc-stream" else []))
    result = harness("load", *target, "-c", "1", "-c", "2", "--seconds", "0.3",
                     "--warmup", "0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{protocol}, model simple" in result.stdout
    rows = ROW.findall(result.stdout)
    assert [int(c) for c, _, _ in rows] == [1, 2], result.stdout
    assert all(int(rps) > 0 and int(errors) == 0 for _, rps, errors in rows), result.stdout
