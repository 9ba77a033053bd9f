"""In-process cost of one ONNX Runtime call: the native runtime's Run() beside Python's session.run.

Builds csrc/onnxruntime_runtime_bench.cc with CMake against the working tree's core and
runs it: the native runtime's Run() with outputs bound to pooled buffers, and copied once
into them when the model leaves an output dim open. Beside it onnxruntime's Python API
``session.run`` on the same model files, same session options (one intra-op thread, no
spinning); µs per call, medians of 3 rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from ..harness.frameworks import onnxruntime_call_us
from ..harness.native_bench import build_bench
from ..harness.report import heading, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=0.4,
                        help="per Python session.run figure and round (default 0.4)")


def run(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from pyserver.backends.onnxruntime_onnx import LIBRARY_ENV, library_path

    work = Path(tempfile.mkdtemp(prefix="perf-ort-micro-"))
    binary = build_bench("onnxruntime_runtime_bench", work / "build")
    out = subprocess.run([str(binary), str(work)], env=dict(os.environ, **{LIBRARY_ENV:
                                                                          library_path()}),
                         check=True, capture_output=True, text=True).stdout
    native = {}
    for line in out.splitlines():
        if line.startswith("case "):
            _, model, batch, outputs, us = line.split()
            native[(model, int(batch), outputs)] = float(us)
    cases = sorted({(m, b) for m, b, _ in native})
    python = {(m, b): statistics.median(onnxruntime_call_us(work / f"{m}_bound.onnx", b,
                                                            args.seconds) for _ in range(3))
              for m, b in cases}
    print(heading(f"onnxruntime {ort.__version__}; one intra-op thread, no spinning; medians "
                  f"of 3 rounds; µs per call"))
    rows = []
    for m, b in cases:
        bound, copied = native[(m, b, "bound")], native[(m, b, "copied")]
        rows.append([m, b, f"{bound:.1f}", f"{copied:.1f}", f"{python[(m, b)]:.1f}",
                     f"{bound / python[(m, b)]:.2f}"])
    print(table(["model", "batch", "native Run, outputs bound", "native Run, outputs copied",
                 "Python session.run", "native bound / Python"], rows))
    return 0
