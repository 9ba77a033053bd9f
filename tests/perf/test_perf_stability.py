"""pyserver-perf's measurement rules with no server: the window placed in the
middle of the completions, perf_client's percentile index, the three-window
stability rule, max trials and its message, the latency limit, the sweep
levels and flag checks, and a clear error for --plot without matplotlib."""

from __future__ import annotations

import pathlib
import sys

import pytest

try:
    import pyserver_perf  # noqa: F401 - installed with the wheel
except ImportError:        # an environment installed before perf/ shipped it
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "perf"))

from pyserver_perf import cli, report  # noqa: E402
from pyserver_perf.measurement import (  # noqa: E402
    ServerSide, Window, is_stable, percentile_index, profile_level, summarize, unstable_message)

MS = 1_000_000


def window(throughput: float, latency_us: float, errors: int = 0, p99: float | None = None,
           concurrency: int = 1) -> Window:
    return Window(concurrency=concurrency, batch_size=1, window_s=1.0, request_count=100,
                  throughput=throughput, avg_latency_us=latency_us, errors=errors,
                  percentiles_us={50: latency_us, 90: latency_us, 95: latency_us,
                                  99: p99 if p99 is not None else latency_us})


def replay(windows: list[Window]):
    """A measure() that returns the given windows in order."""
    it = iter(windows)
    taken = []

    def measure() -> Window:
        taken.append(next(it))
        return taken[-1]

    return measure, taken


# -- one window --------------------------------------------------------------------------

def test_window_keeps_requests_ending_in_the_middle_window():
    # 100 requests of 1 ms each, back to back over 100 ms; a 50 ms window in the middle
    starts = [i * MS for i in range(100)]
    ends = [s + MS for s in starts]
    w = summarize(starts, ends, failed=0, window_ns=50 * MS, batch_size=4, concurrency=1)
    # first start 0, last end 100 ms: the window is [25, 75] ms, both ends included
    assert w.request_count == 51
    assert w.throughput == pytest.approx(51 * 4 / 0.05)
    assert w.avg_latency_us == pytest.approx(1000)
    assert w.std_latency_us == pytest.approx(0, abs=1e-3)


def test_percentiles_use_perf_clients_rounded_index():
    assert percentile_index(50, 10) == 5      # round(4.5) half up, as floor(x + 0.5)
    assert percentile_index(99, 100) == 98
    assert percentile_index(90, 1) == 0
    starts = [0] * 10
    ends = [(i + 1) * 1000 for i in range(10)]          # 1..10 µs
    w = summarize(starts, ends, 0, 100 * MS, 1, 1, percentiles=(50, 90, 99))
    assert w.percentiles_us == {50: 6.0, 90: 9.0, 99: 10.0}


def test_a_window_with_failures_counts_zero_throughput():
    w = summarize([0, 1], [10, 11], failed=1, window_ns=MS, batch_size=1, concurrency=1,
                  first_error="HTTP 400: bad input")
    assert w.throughput == 0 and w.errors == 1 and w.first_error == "HTTP 400: bad input"


def test_server_overhead_is_clamped_at_zero_and_network_time_derived():
    assert ServerSide(10, 100, 30, 50).overhead_us == 20
    assert ServerSide(10, 100, 60, 50).overhead_us == 0
    w = window(1000, 500)
    w.avg_send_us, w.avg_recv_us, w.server = 10, 20, ServerSide(10, 300, 100, 150)
    assert w.network_us == 500 - 10 - 20 - 100 - 150


# -- stability ------------------------------------------------------------------------------

def test_three_windows_within_the_band_are_stable():
    assert is_stable([window(1000, 500), window(1050, 520), window(960, 480)], 10)


def test_fewer_than_three_windows_are_never_stable():
    assert not is_stable([window(1000, 500), window(1000, 500)], 10)


@pytest.mark.parametrize("outlier", [window(1300, 500), window(1000, 650)],
                         ids=["throughput", "latency"])
def test_one_window_outside_the_band_is_unstable(outlier):
    assert not is_stable([window(1000, 500), window(1000, 500), outlier], 10)
    # the same spread passes a wider band
    assert is_stable([window(1000, 500), window(1000, 500), outlier], 30)


def test_only_the_last_three_windows_count():
    assert is_stable([window(5000, 50), window(1000, 500), window(1000, 500),
                      window(1000, 500)], 10)


def test_a_window_with_errors_is_never_stable():
    assert not is_stable([window(1000, 500), window(1000, 500), window(1000, 500, errors=1)],
                         10)


def test_stabilising_on_a_percentile_ignores_the_average():
    windows = [window(1000, 500, p99=900), window(1000, 800, p99=910), window(1000, 300, p99=905)]
    assert not is_stable(windows, 10)
    assert is_stable(windows, 10, percentile=99)


def test_profile_level_stops_at_the_first_stable_triple():
    measure, taken = replay([window(2000, 100), window(1000, 500), window(1010, 505),
                             window(990, 495), window(1000, 500)])
    level = profile_level(measure, 1, stability_pct=10, max_trials=10)
    assert level.outcome == "stable" and level.stable and level.meets_threshold
    assert len(taken) == 4
    assert level.final is taken[-1]


def test_profile_level_gives_up_after_max_trials():
    swings = [window(1000 if i % 2 else 2000, 500) for i in range(20)]
    measure, taken = replay(swings)
    level = profile_level(measure, 3, stability_pct=10, max_trials=5)
    assert level.outcome == "unstable" and not level.meets_threshold
    assert len(taken) == 5
    assert unstable_message(5, 3) == (
        "Failed to obtain stable measurement within 5 measurement windows for concurrency 3. "
        "Please try to increase the time window (--measurement-interval / -p).")


def test_a_stable_level_at_the_latency_limit_ends_the_sweep():
    measure, _ = replay([window(1000, 2000)] * 3)
    level = profile_level(measure, 4, 10, 10, latency_threshold_us=2000)
    assert level.stable and not level.meets_threshold


def test_three_unstable_windows_all_over_the_limit_stop_early():
    measure, taken = replay([window(1000, 3000), window(2000, 6000), window(1000, 3000),
                             window(1000, 3000)])
    level = profile_level(measure, 4, 10, 10, latency_threshold_us=2000)
    assert level.outcome == "over-threshold" and not level.meets_threshold
    assert len(taken) == 3


# -- flags and the sweep ---------------------------------------------------------------------

def levels(*argv: str) -> list[int]:
    parser = cli.build_parser()
    args = parser.parse_args(["-m", "x", *argv])
    cli._check_args(parser, args)
    return list(cli.concurrency_levels(args))


def test_concurrency_range_start_end_step():
    assert levels() == [1]
    assert levels("--concurrency-range", "2") == [2]
    assert levels("--concurrency-range", "1:7:3") == [1, 4, 7]
    assert levels("--concurrency-range", "1:8") == list(range(1, 9))
    assert levels("-t", "3") == [3]


def test_dynamic_search_steps_by_one_up_to_the_concurrency_limit():
    assert levels("-d", "-t", "2", "-c", "5", "-l", "10") == [2, 3, 4, 5]
    unbounded = levels("-d", "-l", "10")
    assert unbounded[:3] == [1, 2, 3] and unbounded[-1] == cli.UNBOUNDED_CONCURRENCY


@pytest.mark.parametrize("argv", [["--concurrency-range", "1:0"], ["-d"],
                                  ["--concurrency-range", "0:4"], ["-p", "0"],
                                  ["--percentile", "100"], ["-i", "soap"]])
def test_bad_flag_combinations_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        levels(*argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_endpoint_defaults_follow_the_protocol():
    from pyserver_perf.target import Endpoint, PerfError
    assert Endpoint.parse(None, "http").address == "localhost:8000"
    assert Endpoint.parse(None, "GRPC").address == "localhost:8001"
    assert Endpoint.parse("http://127.0.0.1:9000/", "http").port == 9000
    with pytest.raises(PerfError):
        Endpoint.parse("nohost", "http")


def test_csv_percentile_columns_ascend_with_a_custom_one():
    assert report.csv_percentiles(None) == [50, 90, 95, 99]
    assert report.csv_percentiles(75) == [50, 75, 90, 95, 99]
    assert report.csv_percentiles(95) == [50, 90, 95, 99]


def test_plot_without_matplotlib_fails_before_any_load(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    code = cli.main(["-m", "simple", "-u", "127.0.0.1:1", "--plot", str(tmp_path / "x.png")])
    assert code == 1
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "pip install matplotlib" in err
    assert not (tmp_path / "x.png").exists()


def test_an_unreachable_server_is_one_clear_error(capsys):
    code = cli.main(["-m", "simple", "-u", "127.0.0.1:1", "-p", "100"])
    assert code == 1
    assert "cannot reach 127.0.0.1:1" in capsys.readouterr().err


# -- answer framing ------------------------------------------------------------------------

def test_answers_are_framed_by_content_length_in_any_spelling():
    from pyserver_perf.load import _answer_length
    for name in (b"Content-Length", b"content-length", b"CONTENT-LENGTH"):
        head = b"HTTP/1.1 200 OK\r\nNV-Status: code: SUCCESS\r\n" + name + b": 42"
        assert _answer_length(head, len(head)) == len(head) + 4 + 42


def test_chunked_answers_are_found_complete_or_not():
    from pyserver_perf.load import CHUNKED, _answer_length, _chunked_length
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
    assert _answer_length(head, len(head)) == CHUNKED
    body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n"
    whole = bytearray(head + b"\r\n\r\n" + body + b"HTTP/1.1 200")   # the next answer begins
    start = len(head) + 4
    assert _chunked_length(whole, start) == start + len(body)
    for cut in (start + 3, start + 10, start + len(body) - 1):
        assert _chunked_length(whole[:cut], start) == -1
