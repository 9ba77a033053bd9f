"""A 4 MiB tensor through system shared memory beside the same tensor in the request body.

One server (``--allow-shared-memory``), v2 HTTP through tritonclient.http, one request at a
time to an identity model of 1,048,576 FP32 elements, the output coming back the same way
(a shared-memory region, or binary in the body). Alternating rounds; per mode the median
and p90 client latency and the server's CPU per request. Regions are made with
tritonclient.utils.shared_memory. With ``--baseline-pythonpath`` (or ``--baseline-python``)
a second server of that install answers the in-body request too, in the same rounds: a change
to how bodies are read or written measured against what it replaces.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..harness.cpu import cpu_seconds
from ..harness.options import add_baseline, baseline_build
from ..harness.processes import NO_REPOSITORY_POLLING, pyserver
from ..harness.report import heading, table
from ..harness.timing import call_times_ns

ELEMENTS = 1 << 20
BYTES = ELEMENTS * 4
MODEL = "identity_4mb"
MODES = {"body": "in the body (binary)", "shm": "system shared memory"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and mode")
    add_baseline(parser, "e.g. the previous commit's build")


def write_store(root: Path) -> Path:
    from pyserver.examples import onnx_models
    from pyserver.examples.store import config, tensor, write_model

    write_model(root, MODEL, config(MODEL, 0, [tensor("INPUT0", "FP32", [ELEMENTS])],
                                    [tensor("OUTPUT0", "FP32", [ELEMENTS])]),
                {1: onnx_models.identity("FP32", [ELEMENTS])})
    return root


@contextlib.contextmanager
def regions(data: np.ndarray) -> Iterator[dict[str, tuple[object, str]]]:
    """{"bench_in" | "bench_out": (handle, key)}, the input region holding ``data``."""
    import tritonclient.utils.shared_memory as shm

    made = {name: shm.create_shared_memory_region(name, f"/pyserver-{name}-{os.getpid()}",
                                                  BYTES) for name in ("bench_in", "bench_out")}
    try:
        shm.set_shared_memory_region(made["bench_in"], [data])
        yield {name: (handle, f"/pyserver-{name}-{os.getpid()}") for name, handle in made.items()}
    finally:
        for handle in made.values():
            shm.destroy_shared_memory_region(handle)


def requests(data: np.ndarray) -> dict[str, tuple[list, list]]:
    import tritonclient.http as httpclient

    body_in = httpclient.InferInput("INPUT0", [ELEMENTS], "FP32")
    body_in.set_data_from_numpy(data, binary_data=True)
    shm_in = httpclient.InferInput("INPUT0", [ELEMENTS], "FP32")
    shm_in.set_shared_memory("bench_in", BYTES)
    shm_out = httpclient.InferRequestedOutput("OUTPUT0")
    shm_out.set_shared_memory("bench_out", BYTES)
    return {"body": ([body_in], [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]),
            "shm": ([shm_in], [shm_out])}


def run(args: argparse.Namespace) -> int:
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm

    work = Path(tempfile.mkdtemp(prefix="perf-shm-"))
    store = write_store(work / "store")
    data = np.random.default_rng(0).random(ELEMENTS, dtype=np.float32)
    modes = dict(MODES)
    baseline = baseline_build(args)
    if baseline is not None:
        modes["baseline"] = "in the body, baseline install"
    latencies: dict[str, list[int]] = {mode: [] for mode in modes}
    cpu = dict.fromkeys(modes, 0.0)
    flags = [*NO_REPOSITORY_POLLING, "--allow-shared-memory"]
    with contextlib.ExitStack() as stack:
        made = stack.enter_context(regions(data))
        server = stack.enter_context(pyserver(store, work, flags=flags))
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        for name, (_, key) in made.items():
            client.register_system_shared_memory(name, key, BYTES)
        calls = {mode: (server.pid, lambda i=inputs, o=outputs: client.infer(MODEL, i, outputs=o))
                 for mode, (inputs, outputs) in requests(data).items()}
        if baseline is not None:
            other = stack.enter_context(pyserver(store, work, "baseline", baseline, flags))
            other_client = httpclient.InferenceServerClient(f"127.0.0.1:{other.http_port}")
            stack.callback(other_client.close)
            inputs, outputs = requests(data)["body"]
            calls["baseline"] = (other.pid, lambda: other_client.infer(MODEL, inputs,
                                                                       outputs=outputs))
            assert np.array_equal(calls["baseline"][1]().as_numpy("OUTPUT0"), data)
        assert np.array_equal(calls["body"][1]().as_numpy("OUTPUT0"), data)
        calls["shm"][1]()
        assert np.array_equal(shm.get_contents_as_numpy(made["bench_out"][0], np.float32,
                                                        [ELEMENTS]), data)
        for _ in range(args.rounds):
            for mode, (pid, call) in calls.items():
                cpu0 = cpu_seconds(pid)
                latencies[mode] += call_times_ns(call, args.seconds)
                cpu[mode] += cpu_seconds(pid) - cpu0
        client.unregister_system_shared_memory()
        client.close()
    print(heading(f"4 MiB FP32 identity over v2 HTTP, {args.rounds} rounds x {args.seconds:g} s "
                  f"per mode"))
    rows = []
    for mode, label in modes.items():
        ms = [x / 1e6 for x in latencies[mode]]
        rows.append([label, len(ms), f"{statistics.median(ms):.2f}",
                     f"{statistics.quantiles(ms, n=10)[-1]:.2f}",
                     f"{cpu[mode] / len(ms) * 1e3:.2f}"])
    print(table(["tensors", "requests", "median latency ms", "p90 ms",
                 "server CPU ms / request"], rows))
    return 0
