"""``pyserver --help`` and ``--version``, run as a user runs them (a real
process), and the parsing of the flags they describe."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyserver
from pyserver.cli import build_parser

TIMEOUT_S = 60


def _pyserver(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyserver", *args], capture_output=True,
                          text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def help_text() -> str:
    done = _pyserver("--help")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _flag_help(help_text: str, flag: str) -> str:
    """The help paragraph of one flag (its lines up to the next flag)."""
    match = re.search(rf"^  {re.escape(flag)}\b.*?(?=^  -|\Z)", help_text, re.M | re.S)
    assert match, f"{flag} is not in --help"
    return " ".join(match.group(0).split())


def test_version_prints_the_package_version():
    done = _pyserver("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pyserver {pyserver.__version__}"


def test_help_names_both_apis(help_text):
    assert "v1 API" in help_text and "v2 API" in help_text
    assert "/api/infer" in help_text and "/v2/" in help_text


def test_help_shows_every_default(help_text):
    for action in build_parser()._actions:
        if action.dest in ("help", "version"):
            continue
        text = _flag_help(help_text, action.option_strings[0])
        assert "(default: " in text or "(required)" in text, text


@pytest.mark.parametrize("flag, default", [
    ("--http-port", "8000"), ("--grpc-port", "8001"), ("--metrics-port", "8002"),
    ("--http-address", "0.0.0.0"), ("--strict-liveness", "true"),
    ("--exit-timeout-secs", "30.0"), ("--drain-hold-secs", "0.0"),
    ("--model-control-mode", "poll")])
def test_help_shows_the_real_default(help_text, flag, default):
    assert f"(default: {default})" in _flag_help(help_text, flag)


def test_help_says_how_to_turn_a_boolean_off(help_text):
    assert "--flag=false turns it off" in help_text
    assert "--strict-liveness [true|false]" in _flag_help(help_text, "--strict-liveness")
    assert "STRICT_READINESS" not in help_text


def test_help_describes_health_and_drain(help_text):
    flat = " ".join(help_text.split())
    assert "--strict-liveness=false" in flat
    assert "--drain-hold-secs" in flat and "UNAVAILABLE" in flat


@pytest.mark.parametrize("given, expected", [
    ([], True), (["--strict-liveness"], True), (["--strict-liveness=false"], False),
    (["--strict-liveness", "off"], False), (["--strict-readiness=false"], False),
    (["--strict-readiness=true"], True)])
def test_strict_liveness_parses_on_and_off(given, expected):
    args = build_parser().parse_args(["--model-store=x", *given])
    assert args.strict_readiness is expected


def test_boolean_rejects_other_words():
    done = _pyserver("--model-store=x", "--allow-grpc=maybe")
    assert done.returncode == 2
    assert "expected true or false, got 'maybe'" in done.stderr


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_drain_hold_rejects_what_is_not_a_duration(value):
    done = _pyserver("--model-store=x", f"--drain-hold-secs={value}")
    assert done.returncode == 2
    assert "--drain-hold-secs" in done.stderr
    assert "Traceback" not in done.stderr


def test_snippet_run_in_the_repository_root_uses_the_installed_package():
    """``python -c`` in a checkout puts the source folder first on the path;
    the README's snippets must still find the compiled core and protos."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c",
                           "import pyserver._core, pyserver.protos.api_pb2 as m; print(m.__file__)"],
                          capture_output=True, text=True, timeout=TIMEOUT_S, cwd=root)
    assert done.returncode == 0, done.stderr
    assert not done.stdout.strip().startswith(str(root / "pyserver")), done.stdout


@pytest.mark.parametrize("given, expected", [
    ([], 0), (["--cache-size=4096"], 4096), (["--response-cache-byte-size", "512"], 512),
    (["--cache-config", "local,size=1048576"], 1048576),
    (["--cache-size=1", "--cache-config=local,size=2"], 2)])
def test_cache_size_flags_parse_to_one_size(given, expected):
    assert build_parser().parse_args(["--model-store=x", *given]).cache_size == expected


@pytest.mark.parametrize("flag, fragment", [
    ("--cache-config=redis,size=10", "unknown cache implementation 'redis'"),
    ("--cache-config=local,bytes=10", "no setting 'bytes'"),
    ("--cache-config=local", "expected <cache>,<key>=<value>"),
    ("--cache-config=local,size=lots", "expected a number of bytes"),
    ("--cache-size=-1", "expected a number of bytes >= 0")])
def test_bad_cache_flags_are_refused_with_a_reason(flag, fragment):
    done = _pyserver("--model-store=x", flag)
    assert done.returncode == 2
    assert fragment in done.stderr and "Traceback" not in done.stderr


def test_help_describes_the_response_cache(help_text):
    text = _flag_help(help_text, "--cache-size")
    assert "response_cache { enable: true }" in text and "(default: 0)" in text
    assert "local,size=BYTES" in _flag_help(help_text, "--cache-config")
