"""Builds csrc/core_test.cc with the core's sources and runs it."""

import pathlib
import shutil
import subprocess

import pytest

CSRC = pathlib.Path(__file__).resolve().parents[2] / "csrc"
CORE_SOURCES = sorted(str(p) for p in CSRC.glob("*.cc") if p.name != "core_test.cc")


def build(tmp_path: pathlib.Path, *flags: str) -> pathlib.Path:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH (g++ or c++)")
    binary = tmp_path / "core_test"
    subprocess.run([compiler, "-std=c++17", "-O1", "-g", "-pthread", "-Wall", "-Wextra", "-Werror",
                    *flags, f"-I{CSRC}", str(CSRC / "core_test.cc"), *CORE_SOURCES,
                    "-ldl", "-o", str(binary)], check=True, timeout=180)
    return binary


def run(binary: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)


def test_core_unit_tests_pass(tmp_path):
    result = run(build(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


def test_core_unit_tests_are_clean_under_address_sanitizer(tmp_path):
    result = run(build(tmp_path, "-fsanitize=address,undefined", "-fno-omit-frame-pointer"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR: AddressSanitizer" not in result.stderr
