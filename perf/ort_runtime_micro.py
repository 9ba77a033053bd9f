"""In-process cost of one ONNX Runtime call: the native runtime's Run()
(csrc/onnxruntime_runtime_bench.cc; outputs bound to pooled buffers, or
copied once into them when the model leaves an output dim open) beside
onnxruntime's Python API ``session.run`` on the same model files, same
session options, in one run.

    python perf/ort_runtime_micro.py

Builds the C++ benchmark with g++ against the core's sources first.
"""

from __future__ import annotations

import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

from pyserver.backends.onnxruntime_onnx import LIBRARY_ENV, library_path

CSRC = pathlib.Path(__file__).resolve().parents[1] / "csrc"


def build(work: pathlib.Path) -> pathlib.Path:
    sources = sorted(str(p) for p in CSRC.glob("*.cc") if not p.name.endswith(("_test.cc",
                                                                              "_bench.cc")))
    binary = work / "onnxruntime_runtime_bench"
    compiler = shutil.which("g++") or shutil.which("c++")
    subprocess.run([compiler, "-std=c++17", "-O2", "-pthread", f"-I{CSRC}",
                    str(CSRC / "onnxruntime_runtime_bench.cc"), *sources, "-ldl",
                    "-o", str(binary)], check=True)
    return binary


def python_us(path: pathlib.Path, batch: int, seconds: float = 0.4) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.full((batch, i.shape[1]), 0.5, np.float32) for i in session.get_inputs()}
    for _ in range(20):
        session.run(None, feeds)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, feeds)
        runs += 1
    return (time.perf_counter() - start) * 1e6 / runs


def main() -> None:
    work = pathlib.Path(tempfile.mkdtemp(prefix="pyserver-ort-micro-"))
    binary = build(work)
    env = dict(os.environ, **{LIBRARY_ENV: library_path()})
    out = subprocess.run([str(binary), str(work)], env=env, check=True, capture_output=True,
                         text=True).stdout
    native = {}
    for line in out.splitlines():
        if line.startswith("case "):
            _, model, batch, outputs, us = line.split()
            native[(model, int(batch), outputs)] = float(us)
    cases = sorted({(m, b) for m, b, _ in native})
    python = {(m, b): statistics.median(python_us(work / f"{m}_bound.onnx", b) for _ in range(3))
              for m, b in cases}
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {os.cpu_count()} cpus, "
          f"onnxruntime {ort.__version__}; one intra-op thread, no spinning; medians of 3 "
          f"rounds; µs per call")
    print("| model | batch | native Run, outputs bound | native Run, outputs copied "
          "| Python session.run | native bound / Python |")
    print("|---|---|---|---|---|---|")
    for m, b in cases:
        bound, copied = native[(m, b, "bound")], native[(m, b, "copied")]
        print(f"| {m} | {b} | {bound:.1f} | {copied:.1f} | {python[(m, b)]:.1f} | "
              f"{bound / python[(m, b)]:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
