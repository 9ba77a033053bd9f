"""Runs the whole test suite from outside the source tree's import path, so
the installed package (with its compiled core and generated protos) is the
one under test. Exits with pytest's status."""

import os
import pathlib
import sys

import pytest

root = pathlib.Path(__file__).resolve().parent.parent
os.chdir(root)
if str(root) in sys.path:
    sys.path.remove(str(root))
sys.exit(pytest.main([str(root / "tests"), "-q", "-rs", *sys.argv[1:]]))
