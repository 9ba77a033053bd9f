"""Runs the whole test suite from outside the source tree's import path, so
the installed package (with its compiled core and generated protos) is the
one under test (HTTP parser: httptools, the default); then runs the HTTP
protocol tests (v1 and v2) again with h11, the reference parser, so both pass the same
tests; then runs the suite once more with every server on two front-end worker
processes (--frontend-workers=2), so the hop passes the same tests as the
single-process path. Exits non-zero if any pass fails.

    python tests/run.py [pytest args...]
"""

import os
import pathlib
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parent.parent
os.chdir(root)


def pytest(paths: list[str], parser: str, workers: int = 1, ignore: tuple[str, ...] = ()) -> int:
    # PYSERVER_TEST_FRONTEND_WORKERS: --frontend-workers for every server the tests start
    # (but those whose test pins its own).
    env = dict(os.environ, PYSERVER_TEST_HTTP_PARSER=parser,
               PYSERVER_TEST_FRONTEND_WORKERS=str(workers))
    print(f"== pytest {' '.join(paths)} (HTTP parser: {parser}, front-end workers: {workers})",
          flush=True)
    # A child interpreter started from tests/ keeps the source tree off sys.path.
    return subprocess.call([sys.executable, "-m", "pytest", *paths, "-q", "-rs",
                            *(f"--ignore={root / 'tests' / name}" for name in ignore),
                            *sys.argv[1:]], env=env, cwd=root / "tests")


status = pytest([str(root / "tests")], "httptools")
status = pytest([str(root / "tests" / "http"), str(root / "tests" / "v2")], "h11") or status
# tests/core (the C++ tests) and tests/deploy (manifests) start no server: one pass is all.
status = pytest([str(root / "tests")], "httptools", workers=2, ignore=("core", "deploy")) \
    or status
sys.exit(status)
