"""Builds csrc/tensorflow_runtime_test.cc with the core sources it needs under the
address and undefined-behaviour sanitizers and runs it against the installed
tensorflow wheel's C library (the C++ runtime alone, no server)."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

pytest.importorskip("tensorflow", reason="tensorflow is not installed")

from pyserver.backends import tf_c_api  # noqa: E402

CSRC = pathlib.Path(__file__).resolve().parents[2] / "csrc"
# The runtime and the parts of the core it stands on.
SOURCES = ["tensorflow_runtime_test.cc", "tensorflow_runtime.cc", "tensorflow_api.cc",
           "native_runtime.cc", "tensor.cc", "host_memory_pool.cc", "cuda_runtime.cc"]
pytestmark = pytest.mark.timeout(420)  # a sanitized build on a busy machine


def test_tensorflow_runtime_unit_tests_pass_under_sanitizers(tmp_path):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH (g++ or c++)")
    binary = tmp_path / "tensorflow_runtime_test"
    subprocess.run([compiler, "-std=c++17", "-O1", "-g", "-pthread", "-Wall", "-Wextra", "-Werror",
                    "-fsanitize=address,undefined", "-fno-omit-frame-pointer", f"-I{CSRC}",
                    *(str(CSRC / name) for name in SOURCES), "-ldl",
                    "-o", str(binary)], check=True, timeout=400)
    # TensorFlow's own allocations are not ours to audit: leaks off.
    env = dict(os.environ, PYSERVER_LIBTENSORFLOW=tf_c_api.library_path(),
               TF_CPP_MIN_LOG_LEVEL="2", ASAN_OPTIONS="detect_leaks=0")
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\d+ passed, 0 failed", result.stdout, re.M), result.stdout
    assert "ERROR: AddressSanitizer" not in result.stderr
    assert "runtime error" not in result.stderr
