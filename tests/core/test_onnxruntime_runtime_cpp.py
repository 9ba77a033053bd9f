"""Builds csrc/onnxruntime_runtime_test.cc with the core's sources and runs it
against the onnxruntime wheel's libonnxruntime (the C API, no Python)."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from pyserver.backends.onnxruntime_onnx import LIBRARY_ENV, library_path

CSRC = pathlib.Path(__file__).resolve().parents[2] / "csrc"
CORE_SOURCES = sorted(str(p) for p in CSRC.glob("*.cc") if not p.name.endswith("_test.cc"))


@pytest.fixture(scope="module")
def runtime_test(tmp_path_factory) -> pathlib.Path:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH (g++ or c++)")
    binary = tmp_path_factory.mktemp("ort") / "onnxruntime_runtime_test"
    subprocess.run([compiler, "-std=c++17", "-O1", "-g", "-pthread", "-Wall", "-Wextra", "-Werror",
                    f"-I{CSRC}", str(CSRC / "onnxruntime_runtime_test.cc"), *CORE_SOURCES,
                    "-ldl", "-o", str(binary)], check=True, timeout=300)
    return binary


def run(binary: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{LIBRARY_ENV: library_path()})
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_ort_runtime_unit_tests_pass(runtime_test):
    result = run(runtime_test)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\d+ passed, 0 failed", result.stdout, re.M), result.stdout
    assert not re.search(r"^SKIP (?!GpuInstance)", result.stdout, re.M), result.stdout


def test_gpu_instance_runs_on_its_cuda_stream(runtime_test):
    result = run(runtime_test, "GpuInstanceRunsOnItsDeviceOrSaysWhyNot")
    skipped = re.search(r"^SKIP \S+: (.*)$", result.stdout, re.M)
    if skipped:
        pytest.skip(skipped.group(1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout
