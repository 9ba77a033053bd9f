"""Builds the C++ core's unit tests (csrc/<unit>_test.cc) with CMake and runs them with
ctest, plainly and under AddressSanitizer + UndefinedBehaviorSanitizer. Each C++ test case
(`TEST(Case)` of csrc/unit_test.h) is a pytest test of its own; a case that skips (exit
code 77, e.g. no CUDA device) is reported as skipped with the reason it printed."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
# The discovery CMakeLists.txt does: one ctest test "<unit>_test.<Case>" per TEST(Case) line.
CASE_LINE = re.compile(r"^TEST\(([A-Za-z0-9_]+)\)", re.M)


def cases_of(path: pathlib.Path) -> list[str]:
    return [f"{path.stem}.{case}" for case in CASE_LINE.findall(path.read_text())]


CASES = sorted(case for path in CSRC.glob("*_test.cc") for case in cases_of(path))
SANITIZERS = {"plain": "", "asan-ubsan": "address,undefined"}
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

# Building the core and its tests takes minutes on a busy 2-core machine.
pytestmark = pytest.mark.timeout(1200)


@dataclass
class Outcome:
    status: str  # "passed", "failed" or "skipped"
    output: str


def tool(name: str) -> str:
    beside = pathlib.Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install cmake)")
    return found


def run(command: list, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=timeout, env=env)


def check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                    f"{result.stderr[-4000:]}", pytrace=False)


def build_and_run_ctest(build_dir: pathlib.Path, sanitize: str) -> dict[str, Outcome]:
    cmake, ctest = tool("cmake"), tool("ctest")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler on PATH (c++ or g++)")
    check(run([cmake, "-S", ROOT, "-B", build_dir, "-DPYSERVER_BUILD_TESTS=ON",
               f"-DPYSERVER_SANITIZE={sanitize}", f"-DPython_EXECUTABLE={sys.executable}",
               "-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g"], timeout=300),
          "cmake configure")
    check(run([cmake, "--build", build_dir, "--target", "cc_tests", "-j", str(os.cpu_count() or 2)],
              timeout=900), "cmake --build --target cc_tests")
    junit = build_dir / "ctest.xml"
    env = dict(os.environ, UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    run([ctest, "--test-dir", build_dir, "--output-junit", junit, "-j", "2", "--timeout", "120"],
        timeout=900, env=env)
    if not junit.exists():
        pytest.fail("ctest wrote no results", pytrace=False)
    outcomes = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        output = case.findtext("system-out") or ""
        if case.find("failure") is not None or case.get("status") == "fail":
            status = "failed"
        elif case.find("skipped") is not None:
            status = "skipped"
        else:
            status = "passed"
        outcomes[case.get("name")] = Outcome(status, output)
    return outcomes


@pytest.fixture(scope="module", params=sorted(SANITIZERS))
def ctest_results(request, tmp_path_factory) -> dict[str, Outcome]:
    return build_and_run_ctest(tmp_path_factory.mktemp(f"cc-{request.param}"),
                               SANITIZERS[request.param])


def test_every_core_unit_has_its_own_cpp_test_cases():
    units = {case.split(".")[0] for case in CASES}
    assert {"completion_queue_test", "cuda_stream_test", "direct_scheduler_test",
            "dynamic_batcher_test", "host_memory_pool_test", "key_hash_test", "model_stats_test",
            "native_runtime_test", "onnxruntime_runtime_test", "tensorflow_runtime_test"} <= units


@pytest.mark.parametrize("case", CASES)
def test_cpp_unit_test_passes_under_ctest(ctest_results, case):
    outcome = ctest_results.get(case)
    assert outcome is not None, f"ctest did not run {case}"
    if outcome.status == "skipped":
        reason = re.search(r"^SKIP \S+: (.*)$", outcome.output, re.M)
        pytest.skip(reason.group(1) if reason else "skipped (exit code 77)")
    assert outcome.status == "passed", outcome.output
    for report in SANITIZER_REPORTS:
        assert report not in outcome.output, outcome.output
