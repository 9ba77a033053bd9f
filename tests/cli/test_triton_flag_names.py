"""Triton's flag names for TLS and gRPC keep-alive parse into pyserver's
settings (Triton's durations are milliseconds); without them pyserver's own
defaults hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyserver.cli import build_parser


def _parse(*flags: str):
    return build_parser().parse_args(["--model-store=store", *flags])


@pytest.mark.parametrize("flag, dest, expected", [
    ("--grpc-keepalive-time=7200000", "grpc_keepalive_time_secs", 7200.0),
    ("--grpc-keepalive-timeout=20000", "grpc_keepalive_timeout_secs", 20.0),
    ("--grpc-http2-min-recv-ping-interval-without-data=300000", "grpc_min_ping_interval_secs",
     300.0),
    ("--grpc-http2-max-ping-strikes=0", "grpc_max_ping_strikes", 0),
    ("--grpc-max-connection-age=600000", "grpc_max_connection_age_secs", 600.0),
    ("--grpc-max-connection-age-grace=5000", "grpc_max_connection_age_grace_secs", 5.0),
])
def test_tritons_keepalive_names_set_our_bounds(flag, dest, expected):
    assert getattr(_parse(flag), dest) == expected


def test_our_defaults_hold_without_tritons_names():
    args = _parse()
    assert (args.grpc_keepalive_time_secs, args.grpc_keepalive_timeout_secs,
            args.grpc_min_ping_interval_secs, args.grpc_max_ping_strikes,
            args.grpc_max_connection_age_secs) == (60.0, 20.0, 10.0, 2, 0.0)


def test_tritons_tls_names_parse():
    args = _parse("--grpc-use-ssl-mutual=1", "--grpc-server-cert=s.crt",
                  "--grpc-server-key=s.key", "--grpc-root-cert=ca.crt")
    assert args.grpc_use_ssl_mutual is True and args.grpc_use_ssl is False
    assert (args.grpc_server_cert, args.grpc_server_key, args.grpc_root_cert) == (
        Path("s.crt"), Path("s.key"), Path("ca.crt"))


def test_a_triton_duration_must_be_whole_milliseconds():
    with pytest.raises(SystemExit):
        _parse("--grpc-keepalive-time=1.5s")
