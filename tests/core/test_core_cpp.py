"""Builds the C++ unit tests (csrc/*_test.cc) with the core's sources and runs them."""

import pathlib
import re
import shutil
import subprocess

import pytest

CSRC = pathlib.Path(__file__).resolve().parents[2] / "csrc"
CORE_SOURCES = sorted(str(p) for p in CSRC.glob("*.cc") if not p.name.endswith(("_test.cc", "_bench.cc")))
# Each test compiles every core source (the native runtimes included), under the
# sanitizers for some: far beyond the suite's default 120 s on a busy machine.
pytestmark = pytest.mark.timeout(600)


def build(tmp_path: pathlib.Path, *flags: str, test: str = "core_test") -> pathlib.Path:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH (g++ or c++)")
    binary = tmp_path / test
    subprocess.run([compiler, "-std=c++17", "-O1", "-g", "-pthread", "-Wall", "-Wextra", "-Werror",
                    *flags, f"-I{CSRC}", str(CSRC / f"{test}.cc"), *CORE_SOURCES,
                    "-ldl", "-o", str(binary)], check=True, timeout=400)
    return binary


def run(binary: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def core_test(tmp_path_factory) -> pathlib.Path:
    return build(tmp_path_factory.mktemp("core"))


def test_core_unit_tests_pass(core_test):
    result = run(core_test)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\d+ passed, 0 failed", result.stdout, re.M), result.stdout


def test_core_unit_tests_are_clean_under_address_sanitizer(tmp_path):
    result = run(build(tmp_path, "-fsanitize=address,undefined", "-fno-omit-frame-pointer"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR: AddressSanitizer" not in result.stderr
    assert "runtime error" not in result.stderr


def test_cuda_stream_copies_through_device_memory(core_test):
    result = run(core_test, "CudaStreamRoundTripsThroughDeviceMemory")
    skipped = re.search(r"^SKIP \S+: (.*)$", result.stdout, re.M)
    if skipped:
        pytest.skip(skipped.group(1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout


def test_native_runtime_unit_tests_pass_under_sanitizers(tmp_path):
    binary = build(tmp_path, "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                   test="native_runtime_test")
    result = run(binary)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\d+ passed, 0 failed", result.stdout, re.M), result.stdout
    assert "runtime error" not in result.stderr
