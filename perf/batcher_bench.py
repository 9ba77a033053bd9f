"""The dynamic batcher's own cost per request, the current implementation beside an
earlier one, in one run of one process (csrc/dynamic_batcher_bench.cc).

    python perf/batcher_bench.py [--previous-rev REV] [--requests N] [--repetitions R]

Takes csrc/dynamic_batcher.{h,cc} as they were at REV (default: 495fedd, the last
commit with the batcher whose instance threads rescanned the queue), moves them into
namespace pyserver::previous, builds the benchmark with CMake (Release) against the
working tree's core, and runs it. Prints a Markdown table of medians: whole-process
CPU and wall time per request, with 0 or 1,000 requests waiting behind each batch.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_PREVIOUS = "495fedd"


def previous_sources(rev: str, folder: pathlib.Path) -> None:
    """Writes previous_dynamic_batcher.{h,cc}: REV's batcher inside pyserver::previous."""
    for ext in ("h", "cc"):
        text = subprocess.run(["git", "show", f"{rev}:csrc/dynamic_batcher.{ext}"], cwd=ROOT,
                              check=True, capture_output=True, text=True).stdout
        text = text.replace('#include "dynamic_batcher.h"', '#include "previous_dynamic_batcher.h"')
        if text.count("namespace pyserver {") != 1 or text.count("}  // namespace pyserver") != 1:
            sys.exit(f"{rev}:csrc/dynamic_batcher.{ext}: expected one namespace pyserver block")
        text = text.replace("namespace pyserver {", "namespace pyserver {\nnamespace previous {")
        text = text.replace("}  // namespace pyserver",
                            "}  // namespace previous\n}  // namespace pyserver")
        (folder / f"previous_dynamic_batcher.{ext}").write_text(text)


def tool(name: str) -> str:
    beside = pathlib.Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or sys.exit(f"no {name}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previous-rev", default=DEFAULT_PREVIOUS)
    parser.add_argument("--requests", type=int, default=200000, help="per run, after warm-up")
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batcher-bench-") as tmp:
        work = pathlib.Path(tmp)
        previous_sources(args.previous_rev, work)
        build = work / "build"
        cmake = tool("cmake")
        subprocess.run([cmake, "-S", ROOT, "-B", build, "-DPYSERVER_BUILD_TESTS=ON",
                        "-DCMAKE_BUILD_TYPE=Release", f"-DPython_EXECUTABLE={sys.executable}",
                        f"-DPYSERVER_BENCH_PREVIOUS_SOURCES={work}"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([cmake, "--build", build, "--target", "dynamic_batcher_bench",
                        "-j", str(os.cpu_count() or 2)], check=True, stdout=subprocess.DEVNULL)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        print(f"previous: {args.previous_rev}, new: {head} (+ working tree); "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", flush=True)
        subprocess.run([build / "dynamic_batcher_bench", str(args.requests),
                        str(args.repetitions)], check=True)


if __name__ == "__main__":
    main()
