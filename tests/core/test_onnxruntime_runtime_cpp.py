"""Builds csrc/onnxruntime_runtime_test.cc with the core's sources, under the
address and undefined-behaviour sanitizers, and runs it against the
onnxruntime wheel's libonnxruntime (the C API, no Python)."""

import os
import pathlib
import re
import subprocess

import pytest

from pyserver.backends.onnxruntime_onnx import LIBRARY_ENV, library_path
from test_core_cpp import build

# Compiling the core under the sanitizers takes minutes on a busy machine.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def runtime_test(tmp_path_factory) -> pathlib.Path:
    return build(tmp_path_factory.mktemp("ort"), "-fsanitize=address,undefined",
                 "-fno-omit-frame-pointer", test="onnxruntime_runtime_test")


def run(binary: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{LIBRARY_ENV: library_path()})
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_ort_runtime_unit_tests_pass_under_sanitizers(runtime_test):
    result = run(runtime_test)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "runtime error" not in result.stderr
    assert re.search(r"^\d+ passed, 0 failed", result.stdout, re.M), result.stdout
    assert not re.search(r"^SKIP (?!GpuInstance)", result.stdout, re.M), result.stdout


def test_gpu_instance_runs_on_its_cuda_stream(runtime_test):
    result = run(runtime_test, "GpuInstanceRunsOnItsDeviceOrSaysWhyNot")
    skipped = re.search(r"^SKIP \S+: (.*)$", result.stdout, re.M)
    if skipped:
        pytest.skip(skipped.group(1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout
