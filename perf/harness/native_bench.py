"""The C++ micro-benchmarks beside the core (csrc/*_bench.cc), built with CMake (Release)
against the working tree's core and run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .paths import REPO


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"no {name} (pip install cmake)")
    return found


def build_bench(target: str, build_dir: Path, *cmake_args: str) -> Path:
    """Configures the repository in ``build_dir`` with the C++ tests and benchmarks on,
    builds ``target`` and returns the binary."""
    cmake = _tool("cmake")
    subprocess.run([cmake, "-S", REPO, "-B", build_dir, "-DPYSERVER_BUILD_TESTS=ON",
                    "-DCMAKE_BUILD_TYPE=Release", f"-DPython_EXECUTABLE={sys.executable}",
                    *cmake_args], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([cmake, "--build", build_dir, "--target", target,
                    "-j", str(os.cpu_count() or 2)], check=True, stdout=subprocess.DEVNULL)
    return build_dir / target
