"""The dynamic batcher's own cost per request, the current one beside an earlier one (C++).

Takes csrc/dynamic_batcher.{h,cc} as they were at ``--previous-rev`` (default 495fedd, the
last batcher whose instance threads rescanned the queue), moves them into namespace
pyserver::previous, builds csrc/dynamic_batcher_bench.cc with CMake (Release) against the
working tree's core and runs it: a Markdown table of medians, whole-process CPU and wall
time per request, with 0 to 10,000 requests waiting behind each batch.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from ..harness.native_bench import build_bench
from ..harness.paths import REPO

DEFAULT_PREVIOUS = "495fedd"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--previous-rev", default=DEFAULT_PREVIOUS)
    parser.add_argument("--requests", type=int, default=200000, help="per run, after warm-up")
    parser.add_argument("--repetitions", type=int, default=5)


def previous_sources(rev: str, folder: Path) -> None:
    """Writes previous_dynamic_batcher.{h,cc}: REV's batcher inside pyserver::previous."""
    for ext in ("h", "cc"):
        text = subprocess.run(["git", "show", f"{rev}:csrc/dynamic_batcher.{ext}"], cwd=REPO,
                              check=True, capture_output=True, text=True).stdout
        text = text.replace('#include "dynamic_batcher.h"', '#include "previous_dynamic_batcher.h"')
        if text.count("namespace pyserver {") != 1 or text.count("}  // namespace pyserver") != 1:
            raise SystemExit(f"{rev}:csrc/dynamic_batcher.{ext}: expected one namespace "
                             f"pyserver block")
        text = text.replace("namespace pyserver {", "namespace pyserver {\nnamespace previous {")
        text = text.replace("}  // namespace pyserver",
                            "}  // namespace previous\n}  // namespace pyserver")
        (folder / f"previous_dynamic_batcher.{ext}").write_text(text)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="perf-batcher-") as tmp:
        work = Path(tmp)
        previous_sources(args.previous_rev, work)
        binary = build_bench("dynamic_batcher_bench", work / "build",
                             f"-DPYSERVER_BENCH_PREVIOUS_SOURCES={work}")
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True).stdout.strip()
        print(f"previous: {args.previous_rev}, new: {head} (+ working tree); "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", flush=True)
        subprocess.run([binary, str(args.requests), str(args.repetitions)], check=True)
    return 0
