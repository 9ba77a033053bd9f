"""Runs the whole test suite from outside the source tree's import path, so
the installed package (with its compiled core and generated protos) is the
one under test (HTTP parser: httptools, the default); then runs the HTTP
protocol tests (v1 and v2) again with h11, the reference parser, so both pass the same
tests. Exits non-zero if either fails.

    python tests/run.py [pytest args...]
"""

import os
import pathlib
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parent.parent
os.chdir(root)


def pytest(paths: list[str], parser: str) -> int:
    # PYSERVER_TEST_FRONTEND_WORKERS=2 in the environment runs every server with two
    # front-end workers (not a pass of its own yet: see tests/workers for what is covered).
    env = dict(os.environ, PYSERVER_TEST_HTTP_PARSER=parser)
    print(f"== pytest {' '.join(paths)} (HTTP parser: {parser})", flush=True)
    # A child interpreter started from tests/ keeps the source tree off sys.path.
    return subprocess.call([sys.executable, "-m", "pytest", *paths, "-q", "-rs", *sys.argv[1:]],
                           env=env, cwd=root / "tests")


status = pytest([str(root / "tests")], "httptools")
status = pytest([str(root / "tests" / "http"), str(root / "tests" / "v2")], "h11") or status
sys.exit(status)
