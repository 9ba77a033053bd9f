"""pyserver-perf against a real server process (one for the module): the v1
CSV columns and row order, a concurrency sweep with live progress, the
server-side breakdown from status, the failure to stabilise, the dynamic
search stopping at the latency limit, and gRPC where the server serves it.

Windows are short (100–300 ms) and stability loose where the test is not
about stability: these tests check behaviour, not speed."""

from __future__ import annotations

import csv
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from conftest import ServerProcess, free_port
from pyserver.examples import onnx_models
from pyserver.examples.store import build_example_store, config, tensor, write_model

PERF_DIR = pathlib.Path(__file__).resolve().parents[2] / "perf"
RUN_TIMEOUT_S = 60
V1_COLUMNS = ["Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv",
              "Server Queue", "Server Compute", "Client Recv"]
BREAKDOWN = re.compile(r"Avg request latency: (\d+) usec \(overhead (\d+) usec \+ queue (\d+) "
                       r"usec \+ compute (\d+) usec\)")
SUMMARY = re.compile(r"Concurrency: (\d+), throughput: ([\d.]+) infer/sec, latency (\d+) usec")


@pytest.fixture(scope="module")
def perf_server(tmp_path_factory):
    """The example store plus ``mlp_serial`` (the mlp with one instance, so
    latency grows with concurrency), with gRPC on when the server has the flag."""
    store = build_example_store(tmp_path_factory.mktemp("perf_store"))
    write_model(store, "mlp_serial",
                config("mlp_serial", 32, [tensor("INPUT0", "FP32", [512])],
                       [tensor("OUTPUT0", "FP32", [1000])],
                       "instance_group [ { count: 1 kind: KIND_CPU } ]"),
                {1: onnx_models.mlp()})
    help_text = subprocess.run([sys.executable, "-m", "pyserver", "--help"], capture_output=True,
                               text=True, timeout=30).stdout
    extra = []
    grpc_port = None
    if "--grpc-port" in help_text:
        grpc_port = free_port()
        extra.append(f"--grpc-port={grpc_port}")
        if "--metrics-port" in help_text:
            extra.append(f"--metrics-port={free_port()}")
    srv = ServerProcess(store, *extra, workdir=tmp_path_factory.mktemp("perf_server"))
    srv.grpc_port = grpc_port
    yield srv
    srv.stop()


def perf(server, *argv: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Runs ``python -m pyserver_perf`` (the installed package, else perf/)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(PERF_DIR)]))
    url = [] if "-u" in argv else ["-u", f"127.0.0.1:{server.port}"]
    return subprocess.run([sys.executable, "-m", "pyserver_perf", *url, *argv],
                          capture_output=True, text=True, timeout=timeout, env=env)


def read_csv(path: pathlib.Path) -> tuple[list[str], list[dict]]:
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def test_sweep_writes_the_v1_csv_sorted_by_throughput(perf_server, tmp_path):
    out = tmp_path / "sweep.csv"
    result = perf(perf_server, "-m", "simple", "--concurrency-range", "1:5:2", "-p", "200",
                  "-s", "1000", "-r", "3", "--percentile", "75", "-f", str(out), "--progress")
    assert result.returncode == 0, result.stdout + result.stderr
    head, rows = read_csv(out)
    assert head == V1_COLUMNS + ["p50 latency", "p75 latency", "p90 latency", "p95 latency",
                                 "p99 latency"]
    assert sorted(int(r["Concurrency"]) for r in rows) == [1, 3, 5]
    throughputs = [float(r["Inferences/Second"]) for r in rows]
    assert throughputs == sorted(throughputs) and throughputs[0] > 0
    for r in rows:
        values = [float(r[c]) for c in head]
        assert all(v >= 0 for v in values), r
        ps = [float(r[f"p{p} latency"]) for p in (50, 75, 90, 95, 99)]
        assert ps == sorted(ps), r
    # the console: one block per level, in sweep order, then the summary
    text = result.stdout
    assert [int(c) for c in re.findall(r"Request concurrency: (\d+)", text)] == [1, 3, 5]
    assert "Inferences/Second vs. Client p75 Batch Latency" in text
    assert [int(m[0]) for m in SUMMARY.findall(text)] == [1, 3, 5]
    assert "Avg latency" not in text          # replaced by the percentile
    assert "p75 latency:" in text and "Load generator CPU:" in text
    # live progress went to stderr (forced: not a terminal here)
    assert "concurrency 1 window 1/3" in result.stderr


def test_server_side_breakdown_is_present_and_consistent(perf_server, tmp_path):
    out = tmp_path / "mlp.csv"
    result = perf(perf_server, "-m", "mlp", "-b", "4", "--concurrency-range", "2", "-p", "300",
                  "-s", "1000", "-r", "3", "-f", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert "Batch size: 4" in text
    server_count = int(re.search(r"  Server: \n    Request count: (\d+)", text).group(1))
    assert server_count > 0
    request, overhead, queue, compute = map(int, BREAKDOWN.search(text).groups())
    assert compute > 0
    assert queue + compute <= request + 1          # +1: each figure is rounded
    assert abs(overhead + queue + compute - request) <= 2
    client = re.search(r"Avg HTTP time: (\d+) usec \(send/recv (\d+) usec \+ response wait "
                       r"(\d+) usec\)", text)
    assert client is not None
    _, rows = read_csv(out)
    assert int(rows[0]["Server Compute"]) == pytest.approx(compute, abs=1)
    assert int(rows[0]["Server Queue"]) == pytest.approx(queue, abs=1)
    # 4 inferences per request
    client_requests = int(re.search(r"  Client: \n    Request count: (\d+)", text).group(1))
    throughput = float(re.search(r"Throughput: ([\d.]+) infer/sec", text).group(1))
    assert throughput == pytest.approx(client_requests * 4 / 0.3, rel=0.01)


def test_an_impossible_stability_band_fails_after_max_trials(perf_server):
    result = perf(perf_server, "-m", "simple", "-p", "100", "-s", "0.0001", "-r", "3", "-v")
    assert result.returncode == 1
    assert ("Failed to obtain stable measurement within 3 measurement windows for "
            "concurrency 1.") in result.stdout
    assert len(re.findall(r"Pass \[\d\] throughput", result.stdout)) == 3
    assert "Request concurrency: 1" not in result.stdout


def test_dynamic_search_stops_at_the_latency_threshold(perf_server, tmp_path):
    # one instance: every extra concurrent request queues behind the others
    out = tmp_path / "dynamic.csv"
    result = perf(perf_server, "-m", "mlp_serial", "-b", "8", "-d", "-l", "3", "-c", "64",
                  "-p", "150", "-s", "1000", "-r", "3", "-f", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Latency limit: 3 msec" in result.stdout
    assert "Concurrency limit: 64 concurrent requests" in result.stdout
    assert "Measured latency went over the set limit of 3 msec." in result.stdout
    summary = [(int(c), float(t), int(lat)) for c, t, lat in SUMMARY.findall(result.stdout)]
    concurrencies = [c for c, _, _ in summary]
    assert concurrencies == list(range(1, len(summary) + 1))
    assert concurrencies[-1] < 64
    assert summary[-1][2] >= 3000
    assert all(lat < 3000 for _, _, lat in summary[:-1])
    _, rows = read_csv(out)
    assert sorted(int(r["Concurrency"]) for r in rows) == concurrencies


def test_a_refused_request_is_reported_at_once(perf_server):
    result = perf(perf_server, "-m", "simple", "-b", "9", "-p", "100")   # max_batch_size 8
    assert result.returncode == 1
    assert "batch size <= 8" in result.stderr
    result = perf(perf_server, "-m", "no_such_model", "-p", "100")
    assert result.returncode == 1 and "no_such_model" in result.stderr


def test_grpc_mode_measures_and_reads_status_over_grpc(perf_server, tmp_path):
    if perf_server.grpc_port is None:
        pytest.skip("the server has no --grpc-port flag")
    from pyserver_perf.target import Endpoint, PerfError, StatusClient
    client = StatusClient(Endpoint("grpc", "127.0.0.1", perf_server.grpc_port))
    try:
        client.status("simple")
    except PerfError as exc:
        pytest.skip(f"the gRPC front end is not served yet ({exc})")
    finally:
        client.close()
    out = tmp_path / "grpc.csv"
    result = perf(perf_server, "-m", "simple", "-i", "grpc", "-u",
                  f"127.0.0.1:{perf_server.grpc_port}", "--concurrency-range", "1:2",
                  "-p", "200", "-s", "1000", "-r", "3", "-f", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Avg gRPC time:" in result.stdout
    request, _, queue, compute = map(int, BREAKDOWN.search(result.stdout).groups())
    assert queue + compute <= request + 1
    head, rows = read_csv(out)
    assert head[:7] == V1_COLUMNS and len(rows) == 2


def test_grpc_streaming_sends_over_stream_infer(perf_server):
    if perf_server.grpc_port is None:
        pytest.skip("the server has no --grpc-port flag")
    result = perf(perf_server, "-m", "simple", "-i", "grpc", "--streaming", "-u",
                  f"127.0.0.1:{perf_server.grpc_port}", "-p", "200", "-s", "1000", "-r", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert float(SUMMARY.search(result.stdout).group(2)) > 0
    refused = perf(perf_server, "-m", "simple", "--streaming", "-p", "100")
    assert refused.returncode == 2 and "--streaming needs -i grpc" in refused.stderr


def test_a_collection_larger_than_a_pipe_buffer_comes_back_whole(perf_server):
    """The load processes hand back every (start, end) pair of a window at
    once: many thousands of requests are far more than a pipe holds."""
    from pyserver_perf.load import LoadManager, LoadSpec
    from pyserver_perf.target import (Endpoint, ModelInfo, StatusClient, http_request,
                                      input_tensors, request_header)

    endpoint = Endpoint("http", "127.0.0.1", perf_server.port)
    status = StatusClient(endpoint)
    config = ModelInfo.from_status(status.status("simple"), "simple", -1).config
    status.close()
    inputs = input_tensors(config, 1, {})
    request = http_request(endpoint, "simple", -1, request_header(config, 1, inputs), inputs)
    wanted = 16000   # 16 bytes each: 256 KB, past a pipe's 64 KB and a socket pair's 208 KB
    with LoadManager(LoadSpec("http", endpoint.host, endpoint.port, request), 1) as load:
        load.set_concurrency(8)
        deadline = time.monotonic() + 30
        while load.completed() < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        collected = load.collect()
        assert collected.failed == 0, collected.first_error
        assert collected.completed >= wanted
        assert len(collected.starts_ns) == collected.completed
        assert all(e >= s for s, e in zip(collected.starts_ns, collected.ends_ns))
        assert load.collect().completed < collected.completed   # the records were reset
