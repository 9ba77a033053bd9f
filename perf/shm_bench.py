"""A 4 MB input through system shared memory beside the same input in the
request body, on one server in one run: v2 HTTP (tritonclient.http) to an
identity model of 1,048,576 FP32 elements, the output coming back the same
way (shared memory, or binary in the body). Alternating rounds; per mode the
median client latency and the server's CPU (user + system of the whole
process) per request.

    python perf/shm_bench.py [--rounds 3] [--seconds 4] [--port 18900]

The server starts on loopback with --allow-shared-memory and stops at the
end; the regions are made with tritonclient.utils.shared_memory.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from v1_http_bench import cpu_seconds, process  # noqa: E402

from pyserver.examples import onnx_models  # noqa: E402
from pyserver.examples.store import config, tensor, write_model  # noqa: E402

ELEMENTS = 1 << 20  # 4 MiB of FP32
BYTES = ELEMENTS * 4
MODEL = "identity_4mb"


def build_store(root: pathlib.Path) -> pathlib.Path:
    write_model(root, MODEL, config(MODEL, 0, [tensor("INPUT0", "FP32", [ELEMENTS])],
                                    [tensor("OUTPUT0", "FP32", [ELEMENTS])]),
                {1: onnx_models.identity("FP32", [ELEMENTS])})
    return root


def body_request(data: np.ndarray):
    inp = httpclient.InferInput("INPUT0", [ELEMENTS], "FP32")
    inp.set_data_from_numpy(data, binary_data=True)
    return [inp], [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]


def shm_request():
    inp = httpclient.InferInput("INPUT0", [ELEMENTS], "FP32")
    inp.set_shared_memory("bench_in", BYTES)
    out = httpclient.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("bench_out", BYTES)
    return [inp], [out]


def run_round(client, pid: int, request, seconds: float) -> tuple[list[float], float, int]:
    """(latencies in ms, server CPU seconds, requests) of one round."""
    inputs, outputs = request
    latencies = []
    cpu0 = cpu_seconds(pid)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        client.infer(MODEL, inputs, outputs=outputs)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies, cpu_seconds(pid) - cpu0, len(latencies)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--port", type=int, default=18900)
    args = p.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-shm-bench-"))
    store = build_store(work / "store")
    port = args.port
    command = [sys.executable, "-m", "pyserver", f"--model-store={store}",
               "--http-address=127.0.0.1", f"--http-port={port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={port + 1}",
               "--metrics-address=127.0.0.1", f"--metrics-port={port + 2}",
               "--repository-poll-secs=0", "--allow-shared-memory"]
    data = np.random.default_rng(0).random(ELEMENTS, dtype=np.float32)
    in_handle = shm.create_shared_memory_region("bench_in", f"/pyserver-bench-in-{os.getpid()}",
                                                BYTES)
    out_handle = shm.create_shared_memory_region("bench_out",
                                                 f"/pyserver-bench-out-{os.getpid()}", BYTES)
    results: dict[str, list] = {"body": [], "shm": []}
    try:
        shm.set_shared_memory_region(in_handle, [data])
        with process(command, f"http://127.0.0.1:{port}/v2/health/ready",
                     work / "server.log") as server:
            client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
            client.register_system_shared_memory("bench_in", f"/pyserver-bench-in-{os.getpid()}",
                                                 BYTES)
            client.register_system_shared_memory("bench_out",
                                                 f"/pyserver-bench-out-{os.getpid()}", BYTES)
            requests = {"body": body_request(data), "shm": shm_request()}
            # both paths give the input back
            inputs, outputs = requests["body"]
            got = client.infer(MODEL, inputs, outputs=outputs).as_numpy("OUTPUT0")
            assert np.array_equal(got, data)
            inputs, outputs = requests["shm"]
            client.infer(MODEL, inputs, outputs=outputs)
            assert np.array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [ELEMENTS]),
                                  data)
            for _ in range(args.rounds):
                for mode in ("body", "shm"):
                    results[mode].append(run_round(client, server.pid, requests[mode],
                                                   args.seconds))
            client.unregister_system_shared_memory()
            client.close()
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)
    print(f"4 MiB FP32 identity over v2 HTTP, {args.rounds} rounds x {args.seconds:.0f} s per "
          f"mode, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| tensors | requests | median latency ms | p90 ms | server CPU ms / request |")
    print("|---|---|---|---|---|")
    for mode, label in (("body", "in the body (binary)"), ("shm", "system shared memory")):
        latencies = [x for lat, _, _ in results[mode] for x in lat]
        cpu = sum(c for _, c, _ in results[mode])
        count = sum(n for _, _, n in results[mode])
        p90 = statistics.quantiles(latencies, n=10)[-1]
        print(f"| {label} | {count} | {statistics.median(latencies):.2f} | {p90:.2f} | "
              f"{cpu / count * 1e3:.2f} |")


if __name__ == "__main__":
    main()
